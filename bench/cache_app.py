"""bench/cache.py's app: times N uwsgi cache calls in a row, inside the worker."""

import os
import time
from urllib.parse import parse_qs

import uwsgi

KEYS = [f"key-{i}" for i in range(1000)]
VALUE = b"v" * 100


def application(environ, start_response):
    q = parse_qs(environ["QUERY_STRING"])
    op, n = q["op"][0], int(q["n"][0])
    started = time.perf_counter()
    if op == "set":
        for i in range(n):
            uwsgi.cache_update(KEYS[i % 1000], VALUE, 0, "bench")
    else:
        for i in range(n):
            uwsgi.cache_get(KEYS[i % 1000], "bench")
    body = f"{os.getpid()} {time.perf_counter() - started}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
