"""ngx-wsgi's `uwsgi` module: uWSGI 2.0's Python API, so apps and packages written for
uWSGI import it and run unchanged.

Provided: what the server is and does (numproc, worker_id(), masterpid(), opt, workers(),
total_requests(), mem(), ...), control (reload(), chain_reload(), stop(), log(),
set_logvar(), setprocname()), the hooks (post_fork_hook, atexit), and the shared caches
(cache2: cache_get(), cache_set(), ...), the shared locks (lock(), unlock(), is_locked()).
uWSGI signals, timers and cron (register_signal(), signal(), add_timer(), add_cron()), the
spooler (spool(), spooler_jobs(), the spooler hook), mules (mule_msg(), mule_get_msg(),
farms), file monitors (add_file_monitor()), set_user_harakiri(), parsefile().
"""

import json as _json
import os as _os
import sys as _sys

import _ngx_wsgi

# Set by ngx-wsgi before the app loads: numproc, cores, buffer_size, started_on, hostname,
# opt, version, version_info.
numproc = 1
cores = 1
buffer_size = 4096
started_on = 0
hostname = b""
opt = {}
version = b""
version_info = (2, 0, 30, "ngx-wsgi", 0)
loop = None
has_threads = True
unbit = False
SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

# Hooks an app (or uwsgidecorators) may set.
post_fork_hook = None
atexit = None
mule_msg_hook = None
spooler = None


def worker_id():
    """The worker's number, 1..numproc (0 in the master)."""
    return _ngx_wsgi.worker_id()


def mule_id():
    """N in mule N, 0 elsewhere."""
    return _ngx_wsgi.mule_id()


def masterpid():
    return _ngx_wsgi.masterpid()


def total_requests():
    """Requests served by the running workers."""
    return _ngx_wsgi.total_requests()


def request_id():
    """This worker's request counter."""
    return _ngx_wsgi.request_id()


def workers():
    """Every worker, as the stats server lists them (uwsgitop's fields)."""
    listed = _json.loads(_ngx_wsgi.workers_json())
    for worker in listed:
        for app in worker["apps"]:
            # uWSGI gives the callable and the sub-interpreter's address; there is one
            # interpreter here, and the callable is not shared across processes.
            app.setdefault("callable", None)
            app.setdefault("interpreter", 0)
        worker["apps"] = tuple(worker["apps"])
    return tuple(listed)


def mem():
    """This process's (rss, vsz), in bytes."""
    return _ngx_wsgi.mem()


def logsize():
    """The log file's size in bytes (0 when logging to stderr)."""
    return _ngx_wsgi.logsize()


def i_am_the_spooler():
    """True in a spooler process, None elsewhere (as uWSGI answers)."""
    return True if _ngx_wsgi.i_am_the_spooler() else None


def spooler_pids():
    """The running spooler processes' pids."""
    return _ngx_wsgi.spooler_pids()


def spooler_pid():
    """The first spooler process's pid (0 without spooler)."""
    pids = _ngx_wsgi.spooler_pids()
    return pids[0] if pids else 0


def spooler_jobs():
    """The task files waiting in the spooler directories (paths, as bytes)."""
    return _ngx_wsgi.spooler_jobs()


def _spool_bytes(key, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(
        f"uwsgi.spool(): the value of {key!r} is a {type(value).__name__}: pass str or bytes "
        "(or use @spool(pass_arguments=True), which pickles the arguments)"
    )


def spool(*args, **kwargs):
    """Writes a task for the spooler: a dict (or keyword arguments) of str or bytes.

    Special keys: spooler (which spooler directory, default the first), priority (a
    number: a subdirectory, lower runs first), at (a unix time before which it does not
    run), body (bytes passed whole). Returns the task file's path (bytes)."""
    if args:
        if len(args) != 1 or not isinstance(args[0], dict):
            raise TypeError("uwsgi.spool() takes one dict, or keyword arguments")
        task = dict(args[0])
        task.update(kwargs)
    else:
        task = dict(kwargs)
    options = {}
    variables = []
    for key, value in task.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name in ("spooler", "body"):
            options[name] = value
            continue
        if name == "priority":
            options[name] = _spool_bytes(name, value).decode()
        variables.append((name.encode(), _spool_bytes(name, value)))
    body = options.get("body", b"")
    if isinstance(body, str):
        body = body.encode()
    spooler_dir = options.get("spooler")
    if spooler_dir is not None:
        spooler_dir = _os.fsdecode(spooler_dir)
    return _ngx_wsgi.spool(variables, bytes(body), spooler_dir, options.get("priority"))


send_to_spooler = spool


def _message_bytes(message):
    if isinstance(message, str):
        return message.encode()
    return bytes(message)


def mule_msg(message, target=None):
    """Sends message (bytes or str) to a mule: any free one (target None or 0), mule N,
    or farm "NAME". True when queued; None when that queue is full."""
    return True if _ngx_wsgi.mule_msg(_message_bytes(message), target) else None


def farm_msg(farm, message):
    """Sends message to the mules of farm `farm`."""
    return True if _ngx_wsgi.mule_msg(_message_bytes(message), str(farm)) else None


def mule_get_msg(signals=True, farms=True, buffer_size=65536, timeout=-1):
    """In a mule: waits for the next message (bytes) for it, the shared queue's and, with
    farms, its farms'; up to `timeout` seconds (-1: until one comes), then None."""
    return _ngx_wsgi.mule_get_msg(True, bool(farms), float(timeout))


def farm_get_msg():
    """In a mule: a message waiting in one of its farms' queues, or None at once."""
    return _ngx_wsgi.mule_get_msg(False, True, 0.0)


def log(message):
    """A line in the daemon's log."""
    _ngx_wsgi.log(str(message))
    return True


def reload():
    """Reloads the daemon gracefully (as SIGHUP to the master)."""
    return _ngx_wsgi.reload()


def chain_reload():
    """Replaces the workers one at a time (as the master fifo's `c`)."""
    return _ngx_wsgi.chain_reload()


def stop():
    """Stops the daemon gracefully (as SIGTERM to the master)."""
    return _ngx_wsgi.stop()


def setprocname(name):
    _ngx_wsgi.setprocname(str(name))


def set_logvar(key, value):
    """A variable for this request's log line: %(key) in log-format."""
    _ngx_wsgi.set_logvar(str(key), str(value))


def get_logvar(key):
    return _ngx_wsgi.get_logvar(str(key))


_signal_handlers = {}


def register_signal(num, target, handler):
    """Signal num runs handler(num) in one worker ("" or "worker"), every worker
    ("workers") or worker N ("workerN")."""
    _ngx_wsgi.register_signal(num, target)
    _signal_handlers[num] = handler
    return True


def signal_registered(num):
    return True if _ngx_wsgi.signal_registered(num) else None


def signal(num):
    """Raises signal num: its handler runs where it was registered to."""
    _ngx_wsgi.raise_signal(num)
    return True


def add_timer(num, seconds):
    """Raises signal num every `seconds` (from the master)."""
    _ngx_wsgi.add_timer(num, seconds, 0)
    return True


def add_rb_timer(num, seconds, iterations=0):
    """As add_timer, `iterations` times (0: forever)."""
    _ngx_wsgi.add_timer(num, seconds, iterations)
    return True


def add_cron(num, minute, hour, day, month, weekday):
    """Raises signal num when the local time matches (-1: any)."""
    _ngx_wsgi.add_cron(num, minute, hour, day, month, weekday)
    return True


def parsefile(path):
    """The vars of a file holding a uwsgi packet (a spool file), as a dict of bytes; None
    when it cannot be read as one (the log says why)."""
    return _ngx_wsgi.parsefile(_os.fsdecode(path))


def set_user_harakiri(seconds):
    """The running request (and its worker) is killed as by harakiri if it still runs
    `seconds` from now; 0 disarms it."""
    _ngx_wsgi.set_user_harakiri(int(seconds))


def add_file_monitor(num, path):
    """Raises signal num when path (a file, or a directory and its entries) changes."""
    _ngx_wsgi.add_file_monitor(num, _os.fsdecode(path))
    return True


def _dispatch_signal(num):
    handler = _signal_handlers.get(num)
    if handler is not None:
        handler(num)


def lock(n=0):
    """Waits for shared lock n (0, or 1..N with locks = N), held by this thread."""
    _ngx_wsgi.lock(n)


def unlock(n=0):
    _ngx_wsgi.unlock(n)


def is_locked(n=0):
    return _ngx_wsgi.is_locked(n)


def cache_get(key, cache=None):
    """The value (bytes), or None."""
    return _ngx_wsgi.cache_get(key, cache)


def cache_exists(key, cache=None):
    return True if _ngx_wsgi.cache_exists(key, cache) else None


def cache_set(key, value, expires=0, cache=None):
    """Stores a new key (an existing one is left: None); expires in seconds, 0 never."""
    return True if _ngx_wsgi.cache_write(key, value, expires, cache, False) else None


def cache_update(key, value, expires=0, cache=None):
    """Stores the key, new or not."""
    return True if _ngx_wsgi.cache_write(key, value, expires, cache, True) else None


def cache_del(key, cache=None):
    return True if _ngx_wsgi.cache_del(key, cache) else None


def cache_clear(cache=None):
    return _ngx_wsgi.cache_clear(cache)


def cache_keys(cache=None):
    return _ngx_wsgi.cache_keys(cache)


def _math(op, default):
    def math(key, amount=default, expires=0, cache=None):
        return True if _ngx_wsgi.cache_math(key, op, amount, expires, cache) is not None else None

    math.__name__ = f"cache_{op}"
    return math


cache_inc = _math("inc", 1)
cache_dec = _math("dec", 1)
cache_mul = _math("mul", 2)
cache_div = _math("div", 2)


def cache_num(key, cache=None):
    """A value cache_inc and friends keep, as an int (0 when missing)."""
    value = _ngx_wsgi.cache_get(key, cache)
    return int.from_bytes(value, _sys.byteorder, signed=True) if value is not None and len(value) == 8 else 0


def __getattr__(name):
    # A part of uWSGI's module ngx-wsgi does not provide (RPC, sharedarea, queue, websockets,
    # metrics, async, ...) says so; hasattr() still answers False.
    raise AttributeError(
        f"module 'uwsgi' has no attribute {name!r}: ngx-wsgi does not provide uwsgi.{name} "
        "(docs/uwsgi-api.md lists what it provides)"
    )
