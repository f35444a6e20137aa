"""ngx-wsgi's `uwsgidecorators`: uWSGI's decorators over the `uwsgi` module.

`postfork`, `thread`, `lock`, `signal`, `timer`, `rbtimer`, `cron`, `spool`,
`spoolforever`, `spoolraw`, `mulefunc`, `mule_brain`, `mule_brainloop`, `filemon` and
`harakiri`. uWSGI's `rpc` and `farm_loop` are not provided (no RPC here; farms are read
with `uwsgi.farm_get_msg()`): using them raises AttributeError saying so.
"""

import pickle
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
        self._arm()
        return f

    def _arm(self):
        """What raises the signal: nothing but uwsgi.signal() for @signal."""


class _signal_source(signal):
    """A decorator whose function handles a free signal that `_arm` ties to a source."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.get("signum", get_free_signal()), **kwargs)


class timer(_signal_source):
    """@timer(seconds, target="", signum=None): the function runs every `seconds`."""

    def __init__(self, secs, **kwargs):
        super().__init__(**kwargs)
        self.secs = secs

    def _arm(self):
        uwsgi.add_timer(self.num, self.secs)


class rbtimer(timer):
    """@rbtimer(seconds, iterations=0, ...): as @timer, `iterations` times."""

    def __init__(self, secs, **kwargs):
        super().__init__(secs, **kwargs)
        self.iterations = kwargs.get("iterations", 0)

    def _arm(self):
        uwsgi.add_rb_timer(self.num, self.secs, self.iterations)


class filemon(_signal_source):
    """@filemon(path, target=""): the function runs when path changes."""

    def __init__(self, fsobj, **kwargs):
        super().__init__(**kwargs)
        self.fsobj = fsobj

    def _arm(self):
        uwsgi.add_file_monitor(self.num, self.fsobj)


class cron(_signal_source):
    """@cron(minute, hour, day, month, weekday, target=""): -1 for any."""

    def __init__(self, minute, hour, day, month, dayweek, **kwargs):
        super().__init__(**kwargs)
        self.fields = (minute, hour, day, month, dayweek)

    def _arm(self):
        uwsgi.add_cron(self.num, *self.fields)


class harakiri:
    """@harakiri(seconds): a request running the function longer is killed, with its
    worker, as by harakiri."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, f):
        def limited(*args, **kwargs):
            uwsgi.set_user_harakiri(self.seconds)
            try:
                return f(*args, **kwargs)
            finally:
                uwsgi.set_user_harakiri(0)

        limited.__name__ = f.__name__
        return limited


spooler_functions = {}


def manage_spool_request(env):
    """The spooler hook: runs the @spool function a task names."""
    env = {(k.decode() if isinstance(k, bytes) else k): v for k, v in env.items()}
    name = env.get("ud_spool_func", b"")
    name = name.decode() if isinstance(name, bytes) else name
    f = spooler_functions.get(name)
    if f is None:
        raise LookupError(
            f"the task names @spool function {name!r}, which this app does not define "
            f"(it has: {', '.join(sorted(spooler_functions)) or 'none'})"
        )
    if "args" in env:
        args = pickle.loads(env.pop("args"))
        kwargs = pickle.loads(env.pop("kwargs"))
        ret = f(*args, **kwargs)
    else:
        ret = f(env)
    fixed = env.get("ud_spool_ret")
    return int(fixed) if fixed is not None else ret


uwsgi.spooler = manage_spool_request

# The spooler's own keys, taken out of the function's keyword arguments.
_SPOOL_OPTIONS = ("spooler", "priority", "at", "body")


class _spoolraw:
    """Calling the decorated function writes a task; the spooler runs the function
    (`.f`), and the task's fate follows its return value."""

    ret = None

    def __init__(self, f, pass_arguments):
        self.f = f
        self.pass_arguments = pass_arguments
        self.__name__ = f.__name__
        self.__doc__ = f.__doc__
        spooler_functions[f.__name__] = f

    def spool(self, *args, **kwargs):
        task = {"ud_spool_func": self.f.__name__}
        if self.ret is not None:
            task["ud_spool_ret"] = str(self.ret)
        if self.pass_arguments:
            for key in _SPOOL_OPTIONS:
                if key in kwargs:
                    task[key] = kwargs.pop(key)
            task.update(kwargs.pop("message_dict", {}))
            task["args"] = pickle.dumps(args)
            task["kwargs"] = pickle.dumps(kwargs)
        else:
            if args:
                task.update(args[0])
            task.update(kwargs)
        return uwsgi.spool(task)

    __call__ = spool


class _spool(_spoolraw):
    ret = uwsgi.SPOOL_OK


class _spoolforever(_spoolraw):
    ret = uwsgi.SPOOL_RETRY


def _spool_decorator(kind):
    def decorator(f=None, pass_arguments=False):
        if f is None:
            return lambda g: kind(g, pass_arguments)
        return kind(f, pass_arguments)

    decorator.__name__ = kind.__name__.lstrip("_")
    return decorator


spool = _spool_decorator(_spool)
spoolforever = _spool_decorator(_spoolforever)
spoolraw = _spool_decorator(_spoolraw)


mule_functions = {}


def mule_msg_dispatcher(message):
    """The mules' message hook: runs the @mulefunc call a message carries."""
    call = pickle.loads(message)
    if isinstance(call, dict) and call.get("service") == "uwsgi_mulefunc":
        return mule_functions[call["func"]](*call["args"], **call["kwargs"])
    return None


uwsgi.mule_msg_hook = mule_msg_dispatcher


class mulefunc:
    """Calling the function in a worker runs it in a mule: any (`@mulefunc`), mule N
    (`@mulefunc(N)`) or a farm's (`@mulefunc("NAME")`)."""

    def __init__(self, f):
        if callable(f):
            self.target = 0
            self._register(f)
        else:
            self.target = f
            self.fname = None

    def _register(self, f):
        self.fname = f.__name__
        mule_functions[f.__name__] = f

    def real_call(self, *args, **kwargs):
        call = {"service": "uwsgi_mulefunc", "func": self.fname, "args": args, "kwargs": kwargs}
        uwsgi.mule_msg(pickle.dumps(call), self.target)

    def __call__(self, *args, **kwargs):
        if self.fname is None:
            self._register(args[0])
            return self.real_call
        return self.real_call(*args, **kwargs)


class mule_brain:
    """Runs the function once in mule N, after it starts."""

    def __init__(self, num):
        self.num = num

    def __call__(self, f):
        def in_the_mule():
            if uwsgi.mule_id() == self.num:
                self._run(f)

        postfork_chain.append(in_the_mule)
        return f

    def _run(self, f):
        f()


class mule_brainloop(mule_brain):
    """Runs the function over and over in mule N."""

    def _run(self, f):
        while True:
            f()


def __getattr__(name):
    raise AttributeError(
        f"module 'uwsgidecorators' has no attribute {name!r}: ngx-wsgi does not provide "
        f"uwsgidecorators.{name} (docs/uwsgi-api.md lists what it provides)"
    )
