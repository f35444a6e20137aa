"""The example app `make demo` serves: plain WSGI, standard library only."""

import html
import os
import sys


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/echo" and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":
        body = b"x" * 65536
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(environ[k]))}</td></tr>"
        for k in sorted(environ)
    )
    page = (
        "<!doctype html><title>ngx-wsgi</title>"
        "<h1>Hello from ngx-wsgi</h1>"
        f"<p>Python {html.escape(sys.version.split()[0])}, worker pid {os.getpid()}</p>"
        f"<table>{rows}</table>"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(page)))])
    return [page]
