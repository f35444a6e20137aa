"""Answers before reading the request body, as apps do: a 403 for bad credentials, a
partial read then an answer, an exception (the server's 500)."""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/noread":
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"forbidden\n"]
    if path == "/read-some":
        environ["wsgi.input"].read(1000)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read 1000\n"]
    if path == "/raise":
        raise RuntimeError("before reading the body")
    if path == "/read-all":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d\n" % len(data)]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
