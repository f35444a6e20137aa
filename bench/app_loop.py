"""Calls bench/app.py's WSGI app N times in this interpreter, with no server around it:
bench/interpreter.sh runs it in each way of running CPython a server can use."""

import io
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
SITE = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
if SITE is None:
    sys.exit("bench/app_loop.py: no .venv with site-packages (make setup makes it)")
sys.path.insert(0, str(SITE))

import json.encoder  # noqa: E402

import app  # noqa: E402  (found through the paths above)


def start_response(status, headers, exc_info=None):
    return None


def environ(path):
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    if app.flask_app is None and path.startswith("/flask/"):
        sys.exit("bench/app_loop.py: Flask is not in the venv (make setup installs it)")
    # An interpreter whose C modules do not load would run their Python fallbacks.
    if json.encoder.c_make_encoder is None:
        sys.exit("bench/app_loop.py: the json module's C part did not load in this interpreter")
    for _ in range(count):
        body = app.application(environ(path), start_response)
        for _chunk in body:
            pass
        if hasattr(body, "close"):
            body.close()


main()
