"""An app whose import takes a while, as a large Django project's does."""

import time

time.sleep(1.0)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"loaded"]
