"""Says how the interpreter that runs it was started and what the process shows
(tests/test_python_host.py)."""

import json
import locale
import os
import signal
import sys


def application(environ, start_response):
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = [arg.decode() for arg in f.read().rstrip(b"\0").split(b"\0")]
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    body = json.dumps({
        "pid": os.getpid(),
        "exe": os.readlink("/proc/self/exe"),
        "executable": sys.executable,
        "comm": comm,
        "cmdline": cmdline,
        "argv": sys.argv,
        "path0": sys.path[0],
        "empty_path_entries": sys.path.count(""),
        # None (embedded: a handler Python did not set) or SIG_DFL (set back by the bootstrap).
        "sigint_raises_keyboard_interrupt": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigpipe": str(signal.getsignal(signal.SIGPIPE)),
        "sigxfsz": str(signal.getsignal(signal.SIGXFSZ)),
        "env": os.environ.get("APP_SETTING"),
        "environ_names": sorted(os.environ),
        "version": list(sys.version_info[:3]),
        "main_module_names": sorted(n for n in vars(sys.modules["__main__"]) if not n.startswith("__")),
        "encodings": [sys.getfilesystemencoding(), locale.getpreferredencoding(False), sys.flags.utf8_mode,
                      os.environ.get("LC_CTYPE")],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
