"""An app on uWSGI's signals: a @timer, a @cron, a @signal for every worker and one for
one worker; each handler appends a line to SIGNAL_RECORD."""

import json
import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import cron, filemon, signal, timer

RECORD = os.environ["SIGNAL_RECORD"]


def record(kind):
    with open(RECORD, "a") as f:
        f.write(f"{kind} {uwsgi.worker_id()} {time.time():.3f}\n")


@timer(1)
def tick(num):
    record("timer")


@cron(-1, -1, -1, -1, -1)
def every_minute(num):
    record("cron")


@signal(17, target="workers")
def everyone(num):
    record("all")


@signal(18)
def someone(num):
    record("one")


if os.environ.get("WATCHED"):
    @filemon(os.environ["WATCHED"])
    def changed(num):
        record("filemon")


def application(environ, start_response):
    q = parse_qs(environ["QUERY_STRING"])
    if environ["PATH_INFO"] == "/raise":
        body = uwsgi.signal(int(q["n"][0]))
    elif environ["PATH_INFO"] == "/badmonitor":
        try:
            uwsgi.add_file_monitor(40, "/nonexistent/dir")
            body = "no error"
        except ValueError as err:
            body = str(err)
    elif environ["PATH_INFO"] == "/badtarget":
        try:
            uwsgi.register_signal(30, "mule1", record)
            body = "no error"
        except ValueError as err:
            body = str(err)
    else:
        body = "not found"
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
