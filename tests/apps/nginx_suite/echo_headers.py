"""The app nginx's uwsgi.t runs behind uwsgi_pass, rewritten: it echoes three request
headers back as response headers and returns its body as a bare bytes object, which
uWSGI sends whole (PEP 3333 would want an iterable)."""


def application(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("X-Forwarded-For", environ.get("HTTP_X_FORWARDED_FOR", "")),
        ("X-Cookie", environ.get("HTTP_COOKIE", "")),
        ("X-Foo", environ.get("HTTP_FOO", "")),
    ])
    return b"SEE-THIS"
