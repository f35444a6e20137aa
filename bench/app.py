"""The benchmark app: the same file is served by ngx-wsgi and by uWSGI."""

import time

BIG = b"x" * 65536


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/64k":
        body = BIG
    elif path == "/sleep":  # the slow endpoint of bench/hol.py: ?ms=N
        time.sleep(int(environ["QUERY_STRING"].partition("=")[2] or 100) / 1000)
        body = b"slept"
    elif path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
