"""An app with background jobs as uWSGI apps write them: @spool functions from
uwsgidecorators, queued from requests. Each task appends a JSON line to $SPOOL_RECORD."""

import json
import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import postfork, spool, spoolforever, spoolraw

RECORD = os.environ["SPOOL_RECORD"]


def record(**fields):
    fields.update(pid=os.getpid(), spooler=uwsgi.i_am_the_spooler(), time=time.time())
    with open(RECORD, "a") as f:
        f.write(json.dumps(fields) + "\n")


def text(value):
    return value.decode() if isinstance(value, bytes) else value


@postfork
def connect():
    # What an app does here: reconnect its database. The spooler runs it too.
    if uwsgi.i_am_the_spooler():
        record(kind="postfork")


@spool
def plain(args):
    record(kind="plain", args={k: (v.hex() if k == "body" else text(v)) for k, v in args.items()
                               if k != "spooler_task_name"},
           task_name=text(args["spooler_task_name"]))


@spool(pass_arguments=True)
def with_args(a, b, *, c=None):
    record(kind="with_args", a=a, b=b, c=c)


@spool
def slow(args):
    time.sleep(float(args["seconds"]))
    record(kind="slow", name=text(args["name"]))


@spoolraw
def flaky(args):
    """Fails twice (SPOOL_RETRY, then an exception), then succeeds."""
    counter = os.path.join(os.path.dirname(RECORD), "flaky-" + text(args["key"]))
    runs = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    with open(counter, "w") as f:
        f.write(str(runs))
    record(kind="flaky", run=runs)
    if runs == 1:
        return uwsgi.SPOOL_RETRY
    if runs == 2:
        raise RuntimeError("the mail server is down")
    return uwsgi.SPOOL_OK


@spoolforever
def forever(args):
    record(kind="forever")


def application(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    status, result = "200 OK", None
    try:
        if path == "/plain":
            extra = {k: v for k, v in query.items()}
            if "at_in" in extra:
                extra["at"] = str(time.time() + float(extra.pop("at_in")))
            result = text(plain.spool(extra))
        elif path == "/body":
            result = text(plain.spool({"x": "with body"}, body=b"\x00\xffraw"))
        elif path == "/args":
            result = text(with_args(1, [2, "three"], c={"d": 4.5}))
        elif path == "/slow":
            result = text(slow.spool(name=query["name"], seconds=query.get("seconds", "1")))
        elif path == "/flaky":
            result = text(flaky.spool(key=query["key"]))
        elif path == "/forever":
            result = text(forever.spool())
        elif path == "/raw":
            kwargs = {k: v for k, v in query.items()}
            result = text(uwsgi.spool(**kwargs))
        elif path == "/bad_value":
            result = text(uwsgi.spool({"n": object()}))
        elif path == "/info":
            result = {"jobs": [text(j) for j in uwsgi.spooler_jobs()], "pids": uwsgi.spooler_pids(),
                      "pid": uwsgi.spooler_pid(), "i_am_the_spooler": uwsgi.i_am_the_spooler()}
        else:
            status, result = "404 Not Found", "no such page"
    except Exception as err:  # what the app sees: shown to the test
        status, result = "500 Internal Server Error", f"{type(err).__name__}: {err}"
    body = json.dumps(result).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
