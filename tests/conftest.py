"""Integration test harness: the real ngx-wsgi binary, real Python apps, Debian's nginx.

Every process runs from a per-test temporary directory and is stopped after the test;
nothing touches the system nginx service.
"""

import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("NGX_WSGI_BIN", str(ROOT / "target" / "release" / "ngx-wsgi"))
# The daemon with the interpreter linked in (`make PYTHON_LINK=static`), built by `make test`.
STATIC_BIN = os.environ.get("NGX_WSGI_STATIC_BIN", str(ROOT / "target" / "python-static" / "release" / "ngx-wsgi"))
APPS = ROOT / "tests" / "apps"
VENV = ROOT / ".venv"


def check_config(*args, cwd=None):
    """`ngx-wsgi --check-config ARGS`: what a user sees checking a config."""
    return subprocess.run([BIN, "--check-config", *map(str, args)], capture_output=True, text=True,
                          timeout=20, cwd=cwd)


def json_records(path, kind=None):
    """The JSON lines a test app appended to `path` (its background work's record), those
    whose "kind" is `kind` when given."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if kind is None or r["kind"] == kind]


def get_json(url, path):
    """(status, decoded JSON body) of GET url+path."""
    import requests
    r = requests.get(url + path, timeout=10)
    return r.status_code, r.json()


def free_port():
    """A free TCP port below the kernel's ephemeral range, so that no outgoing connection
    (nginx to an upstream, a client) takes it between this call and the daemon's bind."""
    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def command_line(pid):
    """/proc/PID/cmdline as its arguments: each ended by one NUL, none padded with more
    (which psutil's cmdline() reads as empty arguments)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\0") and not raw.endswith(b"\0\0"), raw
    return [arg.decode() for arg in raw[:-1].split(b"\0")]


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def held_by_each(connect, ask_pid, workers, at_least):
    """Kept-alive connections, each having served one request, until every one of
    `workers` pids holds at least `at_least`: {pid: [connections]}. `connect()` opens
    one, `ask_pid(conn)` asks it which worker answers."""
    held = {}
    for _ in range(200):
        conn = connect()
        held.setdefault(ask_pid(conn), []).append(conn)
        if len(held) == workers and all(len(c) >= at_least for c in held.values()):
            return held
    raise AssertionError(f"connections did not reach {workers} workers: {held}")


def can_connect(addr):
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.connect(addr)
            return True
        except OSError:
            return False


class Daemon:
    """One ngx-wsgi master and its workers."""

    def __init__(self, tmp_path, args, env=None, cwd=None, binary=BIN):
        self.log_path = tmp_path / f"ngx-wsgi-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.args = [binary, *map(str, args)]
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd or tmp_path,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, addr, timeout=15):
        """Waits until ADDR (or every address of a list) accepts connections."""
        addrs = addr if isinstance(addr, list) else [addr]

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"ngx-wsgi exited with {self.proc.returncode}:\n{self.log()}")
            return all(can_connect(a) for a in addrs)

        wait_for(ready, timeout, f"ngx-wsgi to listen on {addr}")
        return self

    def wait_log(self, pattern, timeout=15):
        return wait_for(lambda: re.search(pattern, self.log()), timeout, f"log line /{pattern}/ in:\n{self.log()}")

    def worker_pids(self):
        """Live worker pids, from the master's log lines."""
        pids = [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", self.log())]
        return [p for p in pids if pid_alive(p)]

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ngx-wsgi did not exit within {timeout}s:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            self.signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Workers whose master was killed: none may outlive a test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        # ProcessLookupError: the process was reaped between the open and the read.
        return False


MODULE = os.environ.get("NGX_WSGI_MODULE", str(ROOT / "target" / "release" / "libngx_http_wsgi_module.so"))

NGINX_CONF = """
{load_module}
user {user};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    client_max_body_size 64m;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {pass_directives}
            {location_extra}
        }}
    }}
}}
"""


def write_nginx_conf(prefix, port, pass_directives, http_extra="", location_extra="", module=False,
                     user="root"):
    """nginx.conf in `prefix` for one server on `port` whose location / has `pass_directives`."""
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            load_module=f"load_module {MODULE};" if module else "",
            user=user,
            pass_directives=pass_directives,
            prefix=prefix,
            port=port,
            http_extra=http_extra,
            location_extra=location_extra,
        )
    )
    return conf


class Nginx:
    """Debian's nginx from its own prefix, passing requests to `upstream` with stock
    uwsgi_pass, or with our module's wsgi_pass when `module` is true."""

    def __init__(self, tmp_path, upstream, http_extra="", location_extra="", module=False, directives=None,
                 conf_text=None):
        self.prefix = tmp_path / f"nginx-{time.monotonic_ns()}"
        self.prefix.mkdir()
        self.port = free_port()
        if conf_text is not None:
            # A whole nginx.conf of the test's own; {prefix}, {port} and {load_module} filled in.
            conf = self.prefix / "nginx.conf"
            conf.write_text(conf_text.format(prefix=self.prefix, port=self.port,
                                             load_module=f"load_module {MODULE};" if module else ""))
        else:
            if directives is None:
                directives = (f"wsgi_pass {upstream};" if module
                              else f"include /etc/nginx/uwsgi_params; uwsgi_pass {upstream};")
            conf = write_nginx_conf(self.prefix, self.port, directives, http_extra, location_extra, module)
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: can_connect(("127.0.0.1", self.port)), 10, "nginx to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def error_log(self):
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon(tmp_path):
    """Starts ngx-wsgi with the given arguments: daemon(*args, ready=addr[, binary=STATIC_BIN])."""
    started = []

    def start(*args, ready=None, env=None, cwd=None, binary=BIN):
        d = Daemon(tmp_path, args, env=env, cwd=cwd, binary=binary)
        started.append(d)
        if ready is not None:
            d.wait_ready(ready)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def nginx(tmp_path):
    """Starts nginx passing every request to `upstream` with uwsgi_pass."""
    started = []

    def start(upstream, **kwargs):
        n = Nginx(tmp_path, upstream, **kwargs)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def app_sock(tmp_path):
    return str(tmp_path / "app.sock")


@pytest.fixture
def served(daemon, nginx, app_sock):
    """An app behind nginx: served(app_file, *extra_args) -> (nginx, daemon)."""

    def start(app, *extra):
        d = daemon("--socket", app_sock, "--wsgi-file", APPS / app, *extra, ready=app_sock)
        n = nginx(f"unix:{app_sock}")
        return n, d

    return start
