"""An app on uWSGI's cache API: counters and values shared by every worker and thread."""

import json
import os
from urllib.parse import parse_qs

import uwsgi

CACHE = os.environ.get("APP_CACHE", "shared")


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    path = environ["PATH_INFO"]
    if path == "/inc":
        body = {"ok": uwsgi.cache_inc("counter", 1, 0, CACHE), "pid": os.getpid()}
    elif path == "/num":
        body = {"num": uwsgi.cache_num("counter", CACHE)}
    elif path == "/set":
        body = {"ok": uwsgi.cache_set(q["k"], q["v"].encode(), int(q.get("t", 0)), CACHE)}
    elif path == "/update":
        body = {"ok": uwsgi.cache_update(q["k"], q["v"].encode(), int(q.get("t", 0)), CACHE)}
    elif path == "/get":
        value = uwsgi.cache_get(q["k"], CACHE)
        body = {"v": value.decode() if value is not None else None, "pid": os.getpid()}
    elif path == "/del":
        body = {"ok": uwsgi.cache_del(q["k"], CACHE)}
    elif path == "/exists":
        body = {"ok": uwsgi.cache_exists(q["k"], CACHE)}
    elif path == "/keys":
        body = {"keys": sorted(k.decode() for k in uwsgi.cache_keys(CACHE))}
    elif path == "/clear":
        body = {"ok": uwsgi.cache_clear(CACHE)}
    elif path == "/big":
        body = {"ok": uwsgi.cache_set("big", b"x" * int(q["n"]), 0, CACHE)}
    elif path == "/longkey":
        body = {"ok": uwsgi.cache_set("k" * int(q["n"]), b"v", 0, CACHE)}
    elif path == "/locked-inc":
        # A read-modify-write under a shared lock: no increment lost across workers.
        uwsgi.lock(1)
        try:
            value = uwsgi.cache_get("plain", CACHE)
            n = int(value) if value is not None else 0
            uwsgi.cache_update("plain", str(n + 1).encode(), 0, CACHE)
        finally:
            uwsgi.unlock(1)
        body = {"ok": True}
    elif path == "/is-locked":
        body = {"locked": uwsgi.is_locked(int(q["n"]))}
    elif path == "/hold":
        uwsgi.lock(2)
        import time
        time.sleep(float(q["s"]))
        uwsgi.unlock(2)
        body = {"ok": True}
    elif path == "/badlock":
        try:
            uwsgi.lock(99)
            body = "no error"
        except ValueError as err:
            body = str(err)
    elif path == "/nocache":
        try:
            uwsgi.cache_get("x", "nosuchcache")
            body = "no error"
        except ValueError as err:
            body = str(err)
    else:
        body = "not found"
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
