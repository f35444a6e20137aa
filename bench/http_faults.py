"""The daemon's own HTTP listener under faults, beside uWSGI's `http-socket`.

Clients on raw sockets loop on a request and record every request's outcome: 2xx (a
whole 200 response with a body), 5xx, another status, reset, closed (the connection
ended without an answer), silent (no answer for 10 s) or refused (no connection: nothing
was sent, and the client waits 10 ms before it tries again); lost is every request sent
that was not answered 2xx. With ngx-wsgi they keep their
connection alive (and reconnect when it closes it); uWSGI's `http-socket` answers one
request per connection, so with it they connect for each. Three faults, each in its own
run of both servers, in turn:

- `kill`: 4 processes x 1 thread, 12 clients on a 20 ms request (so requests queue), one
  worker killed with SIGKILL every second. A killed worker may take the request it was
  running (one per kill here); anything more was lost while waiting.
- `max-requests`: 2 processes, `max-requests 50`, 6 clients on hello-world.
- `reload`: 2 processes, SIGHUP to the master every second, 6 clients on hello-world.
- `stop`: 2 processes, 6 clients on hello-world, one SIGTERM to the master at the end of
  the run (uWSGI's graceful stop on SIGTERM: `--hook-master-start "unix_signal:15
  gracefully_kill_them_all"`); the clients go on until half a second after it exited, and
  are then refused.

uWSGI is pyuwsgi from the project's venv with `--http-socket` (it closes the connection
after each answer). Usage: bench/http_faults.py [--duration S] [--rounds N]
"""

import argparse
import collections
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import ROOT, wait_ready  # noqa: E402

SILENCE = 10  # seconds without an answer before a request counts as lost


OUTCOMES = ("2xx", "5xx", "other status", "reset", "closed", "silent", "refused")


class Client(threading.Thread):
    """One client: sends `path` again and again, counting each request's outcome."""

    def __init__(self, port, path, keep_alive):
        super().__init__(daemon=True)
        self.port, self.path, self.keep_alive = port, path, keep_alive
        self.outcomes = collections.Counter()
        self.stop = threading.Event()
        self.sock, self.buffer = None, b""

    def run(self):
        while not self.stop.is_set():
            outcome = self.request()
            self.outcomes[outcome] += 1
            if outcome != "2xx":
                self.close()

    def request(self):
        """Sends one request: its outcome, one of OUTCOMES."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=SILENCE)
                self.buffer = b""
        except OSError:
            time.sleep(0.01)
            return "refused"
        try:
            connection = "keep-alive" if self.keep_alive else "close"
            self.sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n".encode())
            head, body = self.read_response()
        except socket.timeout:
            return "silent"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except (OSError, EOFError, ValueError):
            return "closed"
        if not self.keep_alive or b"connection: close" in head.lower():
            self.close()
        if head.startswith(b"HTTP/1.1 200") and body:
            return "2xx"
        return "5xx" if head.startswith(b"HTTP/1.1 5") else "other status"

    def read_response(self):
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        if not lengths:  # delimited by the close
            while True:
                try:
                    self.fill()
                except EOFError:
                    break
            body, self.buffer = self.buffer, b""
            self.close()
            return head, body
        while len(self.buffer) < lengths[0]:
            self.fill()
        body, self.buffer = self.buffer[:lengths[0]], self.buffer[lengths[0]:]
        return head, body

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


SCENARIOS = {
    # name: (processes, extra options, clients, path, fault)
    "kill": ("4", [], 12, "/sleep?ms=20", "kill"),
    "max-requests": ("2", ["--max-requests", "50"], 6, "/hello", None),
    "reload": ("2", [], 6, "/hello", "reload"),
    "stop": ("2", [], 6, "/hello", "stop"),
}


def run_one(name, stack, port, duration, work):
    processes, extra, clients_n, path, fault = SCENARIOS[name]
    app = ROOT / "bench" / "app.py"
    common = ["--processes", processes, "--master", "--disable-logging", "--wsgi-file", str(app), *extra]
    if stack == "ngx-wsgi":
        cmd = [os.environ.get("NGX_WSGI_BIN", str(ROOT / "target" / "release" / "ngx-wsgi")),
               "--http-socket", f"127.0.0.1:{port}", *common]
    else:
        cmd = [str(ROOT / ".venv" / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{port}", *common,
               "--die-on-term", "--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]
    env = dict(os.environ)
    if stack == "uWSGI":
        # uWSGI re-executes its binary to reload: /usr/bin/python3.11 without the venv, so
        # pyuwsgi is found through PYTHONPATH.
        env["PYTHONPATH"] = ":".join(str(p) for p in (ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    proc = subprocess.Popen(cmd, cwd=ROOT / "bench", stdout=subprocess.DEVNULL, env=env,
                            stderr=open(work / f"{stack}-{name}.log", "ab"), start_new_session=True)
    wait_ready(("127.0.0.1", port), proc)
    time.sleep(1)  # every worker up
    # uWSGI's http-socket answers one request per connection.
    clients = [Client(port, path, keep_alive=stack == "ngx-wsgi") for _ in range(clients_n)]
    for c in clients:
        c.start()
    faults = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        time.sleep(1)
        if fault == "kill":
            workers = children(proc.pid)
            if workers:
                os.kill(random.choice(workers), signal.SIGKILL)
                faults += 1
        elif fault == "reload":
            proc.send_signal(signal.SIGHUP)
            faults += 1
    if fault == "stop":
        proc.send_signal(signal.SIGTERM)
        faults += 1
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(SILENCE + 5)
    # The server itself went away during the run (not counted when it was told to).
    died = proc.poll() is not None and fault != "stop"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return sum((c.outcomes for c in clients), collections.Counter()), faults, died


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-http-faults-"))
    results = {}
    port = 18290
    for _ in range(args.rounds):
        for name in SCENARIOS:
            for stack in ("ngx-wsgi", "uWSGI"):
                port += 1
                outcomes, faults, died = run_one(name, stack, port, args.duration, work)
                row = results.setdefault((name, stack), [collections.Counter(), 0, 0])
                row[0] += outcomes
                row[1] += faults
                row[2] += died
    print(f"\n{args.rounds} interleaved rounds of {args.duration} s, HTTP clients straight to each server "
          "(sums)\n")
    print(f"| fault | server | sent | {' | '.join(OUTCOMES)} | lost | faults | lost per fault "
          "| runs the server died in |")
    print("|---|---|" + "---:|" * (len(OUTCOMES) + 5))
    for (name, stack), (outcomes, faults, died) in results.items():
        sent = sum(outcomes.values()) - outcomes["refused"]
        lost = sent - outcomes["2xx"]
        per = f"{lost / faults:.2f}" if faults else "-"
        counts = " | ".join(str(outcomes[o]) for o in OUTCOMES)
        print(f"| {name} | {stack} | {sent} | {counts} | {lost} | {faults} | {per} | {died} |")
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
