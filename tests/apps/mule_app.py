"""An app that hands work to mules as uWSGI apps do: @mulefunc functions, messages to any
mule, to mule N and to a farm. What each mule does is appended to $MULE_RECORD."""

import json
import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import mule_brain, mulefunc

RECORD = os.environ["MULE_RECORD"]


def record(**fields):
    fields.update(pid=os.getpid(), mule=uwsgi.mule_id(), worker=uwsgi.worker_id(), time=time.time())
    with open(RECORD, "a") as f:
        f.write(json.dumps(fields) + "\n")


@mulefunc
def resize(name, size=(100, 100)):
    record(kind="resize", name=name, size=list(size))


@mulefunc(2)
def on_mule_two(n):
    record(kind="on_two", n=n)


@mule_brain(1)
def brain():
    record(kind="brain")


def application(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    status, result = "200 OK", None
    try:
        if path == "/resize":
            resize(query["name"], size=(int(query.get("w", 100)), 50))
        elif path == "/two":
            on_mule_two(int(query["n"]))
        elif path == "/raw":
            target = query.get("to")
            target = int(target) if target and target.isdigit() else target
            result = uwsgi.mule_msg(query["msg"].encode(), target)
        elif path == "/big":
            result = uwsgi.mule_msg(b"x" * 70000)
        elif path == "/get":
            result = uwsgi.mule_get_msg(timeout=0)
        elif path == "/id":
            result = uwsgi.mule_id()
        else:
            status, result = "404 Not Found", "no such page"
    except Exception as err:  # what the app sees: shown to the test
        status, result = "500 Internal Server Error", f"{type(err).__name__}: {err}"
    body = json.dumps(result).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
