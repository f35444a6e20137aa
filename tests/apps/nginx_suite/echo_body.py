"""The app nginx's uwsgi_body.t runs, rewritten: without a CONTENT_LENGTH var it says
SEE-THIS; with one, it reads that many bytes and echoes the length and the body, as a
bare bytes object."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if "CONTENT_LENGTH" not in environ:
        return b"SEE-THIS"
    length = int(environ["CONTENT_LENGTH"])
    body = environ["wsgi.input"].read(length)
    return b"cl=%d '%s'" % (length, body)
