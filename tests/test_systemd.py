"""systemd integration, tested without systemd: a NOTIFY_SOCKET listener of our own stands
for systemd's (READY=1, RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1), and Debian's
`systemd-socket-activate` passes listening sockets as a .socket unit does (LISTEN_FDS)."""

import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import APPS, BIN, can_connect, free_port, pid_alive, wait_for

APP = APPS / "pep3333.py"


class NotifySocket:
    """What systemd listens on for a Type=notify service's messages."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def next(self, timeout=15):
        """The next datagram, as a dict of its KEY=value lines."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.messages.append(message)
        return message

    def wait_for(self, key, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify")
    yield n
    n.close()


def test_ready_is_sent_once_every_worker_serves_then_reloading_and_stopping(daemon, notify, tmp_path):
    # The app takes a second to import in each worker (lazy-apps): READY=1 must wait for it.
    app = tmp_path / "slow_import.py"
    app.write_text(f"import time\ntime.sleep(1)\nexec(open({str(APP)!r}).read())\n")
    port = free_port()
    started = time.monotonic()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", app, "--lazy-apps",
               "--processes", "2", env={"NOTIFY_SOCKET": notify.path})
    ready = notify.wait_for("READY")
    assert time.monotonic() - started >= 1.0
    assert ready["READY"] == "1"
    assert ready["MAINPID"] == str(d.pid)
    assert ready["STATUS"] == "serving: 2 workers (0 busy), 0 requests"
    # Ready means serving: both workers answer at once.
    for _ in range(4):
        assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=0.5).status_code == 200

    d.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING")
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0
    # The re-executed master says READY=1 again once its new workers serve.
    again = notify.wait_for("READY")
    assert again["MAINPID"] == str(d.pid)
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=0.5).status_code == 200

    d.signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING")
    assert stopping["STATUS"] == "stopping: SIGTERM, in-flight requests finish"
    d.wait_exit()


def test_a_refused_reload_says_ready_again(daemon, notify, tmp_path):
    ini = tmp_path / "app.ini"
    port = free_port()
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {APP}\n")
    d = daemon(ini, env={"NOTIFY_SOCKET": notify.path})
    notify.wait_for("READY")
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {tmp_path}/missing.py\n")
    d.signal(signal.SIGHUP)
    notify.wait_for("RELOADING")
    # Without READY=1, systemd would keep the unit "reloading" and time it out.
    assert notify.wait_for("READY")["READY"] == "1"
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=2).status_code == 200


def test_status_follows_the_requests_served(daemon, notify):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, env={"NOTIFY_SOCKET": notify.path})
    notify.wait_for("READY")
    for _ in range(3):
        requests.get(f"http://127.0.0.1:{port}/echo", timeout=5)
    # Refreshed every 5 s while it changes.
    status = notify.wait_for("STATUS", timeout=10)
    assert status["STATUS"] == "serving: 1 workers (0 busy), 3 requests"


def test_watchdog_is_fed_at_half_the_timeout(daemon, notify):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    notify.wait_for("READY")
    first = time.monotonic()
    notify.wait_for("WATCHDOG")
    count = 1
    while time.monotonic() - first < 2:
        notify.wait_for("WATCHDOG", timeout=1)
        count += 1
    # Every 200 ms: about 10 in 2 s.
    assert 8 <= count <= 12, count
    d.signal(signal.SIGKILL)


def test_watchdog_meant_for_another_process_is_left_alone(daemon, notify):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
           env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    notify.wait_for("READY")
    with pytest.raises(socket.timeout):
        notify.wait_for("WATCHDOG", timeout=1)


class Activated:
    """The daemon started by systemd-socket-activate on the first connection, with the
    sockets it listens on passed as a .socket unit passes them."""

    def __init__(self, tmp_path, listen, args, names=None):
        self.log_path = tmp_path / f"activate-{time.monotonic_ns()}.log"
        command = ["systemd-socket-activate"]
        for addr in listen:
            command += ["-l", addr]
        if names:
            command.append("--fdname=" + ":".join(names))
        command += [BIN, *map(str, args)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=tmp_path)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def activate(tmp_path):
    started = []

    def start(*args, **kwargs):
        a = Activated(tmp_path, *args, **kwargs)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


def test_socket_activation_serves_on_the_passed_sockets_and_keeps_them_across_a_reload(activate, nginx, tmp_path):
    port = free_port()
    app_sock = str(tmp_path / "app.sock")
    a = activate([f"127.0.0.1:{port}", app_sock],
                 ["--http-socket", f"127.0.0.1:{port}", "--socket", app_sock, "--wsgi-file", APP, "--vacuum"],
                 names=["web", "uwsgi"])
    # systemd-socket-activate starts the daemon on the first connection, which the daemon
    # then serves from the passed socket's queue (binding again would fail: in use).
    wait_for(lambda: can_connect(("127.0.0.1", port)), what="systemd-socket-activate to listen")
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=15).status_code == 200
    log = a.log()
    assert f'"127.0.0.1:{port}": the socket systemd passed' in log
    assert f'"{app_sock}": the socket systemd passed' in log
    n = nginx(f"unix:{app_sock}")
    assert requests.get(n.url + "/echo", timeout=5).status_code == 200

    pid = a.proc.pid
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: a.log().count("app loaded") >= 2, what="the reloaded master")
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=5).status_code == 200
    assert requests.get(n.url + "/echo", timeout=5).status_code == 200

    # vacuum leaves the socket file systemd made: the .socket unit still listens on it.
    os.kill(pid, signal.SIGTERM)
    a.proc.wait(15)
    assert os.path.exists(app_sock)


def test_a_passed_socket_the_config_does_not_name_is_a_clear_error(activate):
    port, other = free_port(), free_port()
    a = activate([f"127.0.0.1:{port}"], ["--http-socket", f"127.0.0.1:{other}", "--wsgi-file", APP])
    wait_for(lambda: can_connect(("127.0.0.1", port)), what="systemd-socket-activate to listen")
    wait_for(lambda: a.proc.poll() is not None, what="the daemon to refuse to start")
    assert a.proc.returncode != 0
    assert (f"systemd passed fd 3 listening on 127.0.0.1:{port}, which no socket, http-socket or stats "
            f"entry of the config names: add it to the config (socket = 127.0.0.1:{port}) or remove it "
            "from the .socket unit") in a.log()


def test_a_config_socket_systemd_did_not_pass_is_bound_as_usual(activate, tmp_path):
    port, other = free_port(), free_port()
    activate([f"127.0.0.1:{port}"],
             ["--http-socket", f"127.0.0.1:{port}", "--http-socket", f"127.0.0.1:{other}", "--wsgi-file", APP])
    wait_for(lambda: can_connect(("127.0.0.1", port)), what="systemd-socket-activate to listen")
    assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=15).status_code == 200
    assert requests.get(f"http://127.0.0.1:{other}/echo", timeout=5).status_code == 200


def test_a_passed_socket_keeps_its_queue_from_one_daemon_to_the_next(tmp_path):
    """systemd holds a .socket unit's sockets while the service restarts: a request sent
    between the stop of one daemon and the start of the next waits in the queue and is
    answered by the next. (Our own sockets are closed to new connections at a stop; the
    ones systemd passed are left as they are.) This test holds the sockets as systemd
    does and starts the daemon twice on them."""
    from test_bad_input import packet, request_vars
    port, app_sock = free_port(), str(tmp_path / "app.sock")
    tcp = socket.create_server(("127.0.0.1", port))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(app_sock)
    unix.listen(16)

    def start(name):
        def as_systemd_does():
            os.dup2(tcp.fileno(), 3)
            os.dup2(unix.fileno(), 4)
        # LISTEN_PID names the daemon's own pid, which the shell keeps through exec.
        command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$@"', "sh", BIN, "--http-socket",
                   f"127.0.0.1:{port}", "--socket", app_sock, "--wsgi-file", APP]
        with open(tmp_path / f"{name}.log", "wb") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=(3, 4),
                                    preexec_fn=as_systemd_does, cwd=tmp_path)

    first = start("first")
    try:
        assert requests.get(f"http://127.0.0.1:{port}/echo", timeout=15).status_code == 200
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
    finally:
        first.kill()
    # Connected and sent while no daemon runs: the kernel queues them on systemd's sockets.
    web = socket.create_connection(("127.0.0.1", port), timeout=15)
    web.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    app = socket.socket(socket.AF_UNIX)
    app.settimeout(15)
    app.connect(app_sock)
    app.sendall(packet(request_vars("/pid")))
    second = start("second")
    try:
        for conn in (web, app):
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
