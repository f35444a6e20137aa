"""ngx-wsgi's `uwsgidecorators`: uWSGI's decorators over the `uwsgi` module.

`postfork`, `thread`, `lock`, `signal`, `timer`, `rbtimer` and `cron` work. The others need parts of the uwsgi API ngx-wsgi does not
provide yet (the spooler, mules, file monitors, user harakiri): applying
one raises NotImplementedError naming what is missing, at import time, rather than
leaving a function that would silently never run.
"""

from threading import Thread

import uwsgi

postfork_chain = []


def _postfork_chain_hook():
    for f in postfork_chain:
        f()


uwsgi.post_fork_hook = _postfork_chain_hook


class postfork:
    """Runs the function in every worker after it is forked (after the app loads, with
    lazy-apps); `@postfork(N)` in worker N only."""

    def __init__(self, f):
        if callable(f):
            self.wid = 0
            self.f = f
        else:
            self.f = None
            self.wid = f
        postfork_chain.append(self)

    def __call__(self, *args, **kwargs):
        if self.f is None:
            self.f = args[0]
            return self
        if self.wid > 0 and self.wid != uwsgi.worker_id():
            return None
        return self.f(*args, **kwargs)


def thread(f):
    """Runs the function in a thread of its own at each call."""

    def run(*args, **kwargs):
        t = Thread(target=f, args=args, kwargs=kwargs)
        t.daemon = True
        t.start()
        return t

    return run


def lock(f):
    """Runs the function holding shared lock 0."""

    def locked(*args, **kwargs):
        uwsgi.lock()
        try:
            return f(*args, **kwargs)
        finally:
            uwsgi.unlock()

    return locked


def get_free_signal():
    # Free in this process: with lazy-apps every worker imports the app and registers its
    # handlers, and must pick the same numbers as the others (the table is shared).
    for num in range(256):
        if num not in uwsgi._signal_handlers:
            return num
    raise Exception("No free uwsgi signal available")


class signal:
    """@signal(num, target=""): the function handles uWSGI signal num."""

    def __init__(self, num, **kwargs):
        self.num = num
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        return f


class timer:
    """@timer(seconds, target="", signum=None): the function runs every `seconds`."""

    def __init__(self, secs, **kwargs):
        self.num = kwargs.get("signum", get_free_signal())
        self.secs = secs
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        uwsgi.add_timer(self.num, self.secs)
        return f


class rbtimer(timer):
    """@rbtimer(seconds, iterations=0, ...): as @timer, `iterations` times."""

    def __init__(self, secs, **kwargs):
        super().__init__(secs, **kwargs)
        self.iterations = kwargs.get("iterations", 0)

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        uwsgi.add_rb_timer(self.num, self.secs, self.iterations)
        return f


class cron:
    """@cron(minute, hour, day, month, weekday, target=""): -1 for any."""

    def __init__(self, minute, hour, day, month, dayweek, **kwargs):
        self.num = kwargs.get("signum", get_free_signal())
        self.fields = (minute, hour, day, month, dayweek)
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        uwsgi.add_cron(self.num, *self.fields)
        return f


for _names, _what in (
    ("spool spoolforever spoolraw", "the spooler is"),
    ("mulefunc mule_brain mule_brainloop", "mules are"),
    ("filemon", "file monitors are"),
    ("harakiri", "a per-request harakiri is"),
):
    for _name in _names.split():
        globals()[_name] = uwsgi._not_provided(f"uwsgidecorators.{_name}", _name, _what)
del _names, _what, _name
