"""The benchmark app: the same file is served by ngx-wsgi and by uWSGI."""

import os
import time

try:  # the Flask workload of bench/run.py: a small JSON view, as a real app's
    from flask import Flask, jsonify

    flask_app = Flask(__name__)

    @flask_app.route("/flask/<name>")
    def hello(name):
        return jsonify(hello=name, length=len(name))
except ImportError:
    flask_app = None

BIG = b"x" * 65536
# bench/hol.py counts the slow requests the app runs: a byte each, in this file.
SLOW_RUNS = os.environ.get("BENCH_SLOW_RUNS")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/flask/"):
        if flask_app is None:
            raise RuntimeError("the Flask workload needs Flask in the venv (make test installs it)")
        return flask_app(environ, start_response)
    if path == "/64k":
        body = BIG
    elif path == "/sleep":  # the slow endpoint of bench/hol.py: ?ms=N
        if SLOW_RUNS:
            with open(SLOW_RUNS, "ab") as runs:
                runs.write(b".")
        time.sleep(int(environ["QUERY_STRING"].partition("=")[2] or 100) / 1000)
        body = b"slept"
    elif path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
