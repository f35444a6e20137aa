"""Reports a version read at import time: a reload must pick up a new file."""

import os

VERSION = open(os.environ["VERSION_FILE"]).read().strip()
if VERSION == "broken":
    raise RuntimeError("this version of the app does not import")


def application(environ, start_response):
    body = f"{VERSION} {os.getpid()}".encode()
    if environ["PATH_INFO"] == "/slow":
        import time
        time.sleep(1.5)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
