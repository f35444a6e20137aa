"""Routes for the tests of uWSGI's worker and socket options."""
import os
import subprocess
import time

HELD = []


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/raise":
        raise RuntimeError("the app failed on purpose")
    if path == "/alloc":
        # Holds the memory past the response, as a leak would.
        HELD.append(bytearray(int(environ.get("QUERY_STRING") or "100") * 1024 * 1024))
        time.sleep(float(environ.get("HTTP_X_SLEEP", "0")))
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    if path == "/argv":
        import sys
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [" ".join(sys.argv).encode()]
    if path == "/fds":
        # What a program the app starts inherits, when the app lets it inherit everything.
        listing = subprocess.run(["ls", "/proc/self/fd"], close_fds=False,
                                 capture_output=True, text=True, check=True).stdout
        body = " ".join(sorted(listing.split(), key=int)).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
