"""ngx-wsgi's `uwsgidecorators`: uWSGI's decorators over the `uwsgi` module.

`postfork`, `thread` and `lock` work. The others need parts of the uwsgi API ngx-wsgi does not
provide yet (the spooler, mules, signals and timers, user harakiri): applying
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


def _not_provided(name, what):
    def decorator(*args, **kwargs):
        raise NotImplementedError(f"uwsgidecorators.{name}: {what} not provided by ngx-wsgi yet")

    decorator.__name__ = name
    return decorator


for _names, _what in (
    ("spool spoolforever spoolraw", "the spooler is"),
    ("mulefunc mule_brain mule_brainloop", "mules are"),
    ("signal timer rbtimer cron filemon", "uWSGI signals and timers are"),
    ("harakiri", "a per-request harakiri is"),
):
    for _name in _names.split():
        globals()[_name] = _not_provided(_name, _what)
del _names, _what, _name
