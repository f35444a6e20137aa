"""A WSGI app exercising PEP 3333 from the app's side.

Routes under /raw/ are plain; every other route runs inside wsgiref.validate.validator,
which raises on anything the server does against the spec (environ types, wsgi.input
methods, start_response rules, close()).
"""

import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

CLOSE_LOG = os.environ.get("CLOSE_LOG")
BIG_FILE = os.environ.get("BIG_FILE")


def text(start_response, body, status="200 OK", extra=()):
    body = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *extra])
    return [body]


def as_json(start_response, value):
    return text(start_response, json.dumps(value, sort_keys=True), extra=[])


class ClosingBody:
    """An iterable whose close() leaves a mark, so a test can see it was called."""

    def __init__(self, chunks, tag, fail_after=None):
        self.chunks, self.tag, self.fail_after = chunks, tag, fail_after

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("failure while streaming the body")
            yield chunk

    def close(self):
        if CLOSE_LOG:
            with open(CLOSE_LOG, "a") as f:
                f.write(self.tag + "\n")


LEAKED = []


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def validated(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ)
    if path.startswith("/environ"):
        info = {k: v for k, v in environ.items() if isinstance(v, str)}
        info["wsgi.version"] = list(environ["wsgi.version"])
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
            info[key] = environ[key]
        return as_json(start_response, info)
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return text(start_response, environ["wsgi.input"].read(length))
    if path == "/digest":
        # Read in small pieces until EOF (wsgi.input_terminated): never the whole body at once.
        digest, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
        return as_json(start_response, {"sha256": digest.hexdigest(), "size": size})
    if path == "/lines":
        stream = environ["wsgi.input"]
        first = stream.readline()
        limited = stream.readline(3)
        rest_of_line = stream.readline()
        some = stream.readlines()
        return as_json(start_response, [first.decode(), limited.decode(), rest_of_line.decode(), [l.decode() for l in some]])
    if path == "/iterate":
        return as_json(start_response, [line.decode() for line in environ["wsgi.input"]])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"then returned"]
    if path == "/generator":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(5))
    if path == "/empty-first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"", b"", b"after empties"])
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"a", b"b"], q.get("tag", "closed"))
    if path == "/error":
        raise RuntimeError("boom in the view")
    if path == "/error-after-headers":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "32000")])
        return ClosingBody([b"partial " * 1000] * 4, q.get("tag", "aborted"), fail_after=2)
    if path == "/excinfo":
        try:
            raise ValueError("handled by the app")
        except ValueError:
            start_response("200 OK", [("Content-Type", "text/plain")])
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"app error page"]
    if path == "/errors":
        environ["wsgi.errors"].write("a line for the server log\n")
        environ["wsgi.errors"].writelines(["second ", "line\n"])
        environ["wsgi.errors"].flush()
        return text(start_response, "logged")
    if path == "/latin1":
        return text(start_response, "ok", extra=[("X-Latin", "caf\xe9")])
    if path == "/created":
        return text(start_response, "made", status="201 Created")
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    if path == "/sleep":
        time.sleep(float(q.get("seconds", "1")))
        return text(start_response, str(os.getpid()))
    if path == "/leak":
        # Memory this worker keeps: what reload-on-rss is for.
        LEAKED.append(b"x" * (int(q.get("mib", "1")) << 20))
        return text(start_response, str(os.getpid()))
    if path == "/osenv":
        return text(start_response, os.environ.get(q.get("name", ""), "(unset)"))
    if path == "/pid":
        return text(start_response, str(os.getpid()))
    if path == "/cookies":
        # A response head of about `kib` KiB: a cookie of 1 KiB each.
        cookies = [("Set-Cookie", f"c{i}={'v' * 1000}") for i in range(int(q.get("kib", "10")))]
        return text(start_response, "ok", extra=cookies)
    if path == "/big":
        size = int(q.get("kib", "64")) * 1024
        return text(start_response, b"x" * size)
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return ClosingBody([b"y" * 65536] * 100000, q.get("tag", "endless"))
    return text(start_response, "not found", status="404 Not Found")


validated_app = validator(validated)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raw/filewrapper":
        f = open(BIG_FILE, "rb")
        f.seek(int(query(environ).get("offset", "0")))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/raw/bad-status":
        start_response("OK", [("Content-Type", "text/plain")])
        return [b"never sent"]
    if path == "/raw/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]
    if path == "/raw/short-body":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"abc"]
    if path == "/raw/no-start-response":
        return [b"body without a head"]
    return validated_app(environ, start_response)
