"""An app written for uWSGI: it imports `uwsgi` and `uwsgidecorators` and shows what it
sees, as JSON. Runs under ngx-wsgi and under real uWSGI alike."""

import json
import os
import time

import uwsgi
from uwsgidecorators import harakiri, postfork

RECORD = os.environ.get("POSTFORK_RECORD")


@postfork
def reconnect():
    # What apps do here: reopen database connections after fork.
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(f"{uwsgi.worker_id()} {os.getpid()}\n")


@harakiri(1)
def limited_to_one_second(seconds):
    time.sleep(seconds)
    return "in time"


def text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [text(v) for v in value]
    return value


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/info":
        body = {
            "numproc": uwsgi.numproc,
            "worker_id": uwsgi.worker_id(),
            "masterpid": uwsgi.masterpid(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "cores": uwsgi.cores,
            "buffer_size": uwsgi.buffer_size,
            "started_on": uwsgi.started_on,
            "hostname": uwsgi.hostname.decode(),
            "version_is_bytes": isinstance(uwsgi.version, bytes),
            "has_threads": bool(uwsgi.has_threads),
            "total_requests": uwsgi.total_requests(),
            "request_id": uwsgi.request_id(),
            "mem": list(uwsgi.mem()),
            "opt": {k.decode() if isinstance(k, bytes) else k: text(v) for k, v in uwsgi.opt.items()},
            "workers": [{"id": w["id"], "pid": w["pid"], "keys": sorted(w), "app_keys": sorted(w["apps"][0])
                         if w["apps"] else []} for w in uwsgi.workers()],
            "mule_id": uwsgi.mule_id(),
            "i_am_the_spooler": uwsgi.i_am_the_spooler(),
        }
    elif path == "/log":
        uwsgi.log("a line from the app via uwsgi.log")
        body = "logged"
    elif path == "/logvar":
        uwsgi.set_logvar("user_id", "42")
        body = uwsgi.get_logvar("user_id")
    elif path == "/parsefile":
        parsed = uwsgi.parsefile(environ["QUERY_STRING"])
        body = None if parsed is None else {k.decode(): v.decode() for k, v in parsed.items()}
    elif path == "/user_harakiri":
        # Armed for 1 s, then (?disarm) disarmed before a 2 s sleep.
        uwsgi.set_user_harakiri(1)
        if "disarm" in environ["QUERY_STRING"]:
            uwsgi.set_user_harakiri(0)
        time.sleep(2)
        body = "survived"
    elif path == "/decorated":
        body = limited_to_one_second(float(environ["QUERY_STRING"] or "0"))
    elif path == "/chain":
        body = uwsgi.chain_reload()
    elif path == "/procname":
        uwsgi.setprocname("my-app-worker")
        body = "set"
    else:
        body = "not found"
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
