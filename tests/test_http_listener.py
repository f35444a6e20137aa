"""The daemon's own HTTP listener loses nothing: clients that record every request's
outcome, with keep-alive and with `Connection: close`, through max-requests recycling,
reloads and a SIGTERM stop; a request followed by shutdown(SHUT_WR) is answered; a retiring worker's
last response on a kept-alive connection says `Connection: close`. Requests on a busy
worker's kept-alive connections go to a free one; a killed worker takes only the request
it was running; max-requests N serves at most N; a stalled request holds its thread for
socket-timeout at most."""

import collections
import os
import signal
import socket
import threading
import time

import pytest

from conftest import APPS, free_port, held_by_each, wait_for

APP = APPS / "pep3333.py"


class Client:
    """One HTTP/1.1 client on raw sockets: every request is sent once and its outcome
    counted: 2xx (a whole 200 response echoing the request), 5xx, another status (or an
    answer without Content-Length), reset, closed (the connection ended without an
    answer), or refused (no connection could be made: nothing was sent)."""

    def __init__(self, port, keep_alive):
        self.port, self.keep_alive = port, keep_alive
        self.outcomes = collections.Counter()
        self.sock = None

    def request(self, n):
        if self.sock is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except ConnectionRefusedError:
                self.outcomes["refused"] += 1
                time.sleep(0.01)
                return
            self.buffer = b""
        connection = "keep-alive" if self.keep_alive else "close"
        try:
            body = f"n={n}".encode()
            self.sock.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head, body = self.read_response()
        except (ConnectionError, OSError, EOFError, ValueError) as err:
            kind = {ConnectionResetError: "reset", EOFError: "closed", ValueError: "other",
                    TimeoutError: "silent"}
            self.outcomes[kind.get(type(err), "closed")] += 1
            self.sock.close()
            self.sock = None
            return
        if head.startswith(b"HTTP/1.1 200") and body == f"n={n}".encode():
            self.outcomes["2xx"] += 1
        else:
            self.outcomes["5xx" if head.startswith(b"HTTP/1.1 5") else "other"] += 1
        if not self.keep_alive or b"\r\nconnection: close" in head.lower():
            self.sock.close()
            self.sock = None

    def read_response(self):
        """(head, body); ValueError for an answer without Content-Length."""
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise ValueError(f"an answer without Content-Length: {head!r}")
        while len(self.buffer) < length:
            self.fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk


def outcomes_of(clients):
    """Every request's outcome, summed over the clients: {"2xx": n, "reset": n, ...}."""
    return sum((c.outcomes for c in clients), collections.Counter())


def run_clients(port, seconds, during=None):
    """6 clients (4 keep-alive, 2 `Connection: close`) sending requests one after another
    until `during` (if given) and `seconds` more are over. Each must still be running then
    and have sent requests: a client that died would hide what it did not send."""
    clients = [Client(port, keep_alive=i % 3 != 0) for i in range(6)]
    stop = threading.Event()
    running = []

    def loop(client):
        n = 0
        while not stop.is_set():
            client.request(n)
            n += 1
        running.append(client)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        if during:
            during()
        time.sleep(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(running) == len(clients), "a client stopped before the end"
    assert all(sum(c.outcomes.values()) >= 5 for c in clients), [c.outcomes for c in clients]
    return clients


def test_nothing_is_lost_through_max_requests_recycling(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--max-requests", "40", "--disable-logging", ready=("127.0.0.1", port))
    clients = run_clients(port, 4)
    outcomes = outcomes_of(clients)
    recycles = d.log().count("max-requests")
    assert recycles >= 5, d.log()
    assert (set(outcomes), outcomes["2xx"] > 500) == ({"2xx"}, True), (outcomes, recycles)


def test_nothing_is_lost_through_reloads(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--disable-logging", ready=("127.0.0.1", port))

    def reloads():
        for reload in range(3):
            time.sleep(0.6)
            d.signal(signal.SIGHUP)
            wait_for(lambda: d.log().count("reload: new workers are up") > reload, 15, "the reload")

    clients = run_clients(port, 0.6, during=reloads)
    outcomes = outcomes_of(clients)
    assert (set(outcomes), outcomes["2xx"] > 200) == ({"2xx"}, True), outcomes


def test_nothing_is_lost_through_a_sigterm_stop(daemon):
    """SIGTERM while keep-alive and `Connection: close` clients send: every request sent
    is answered 2xx; once the daemon is gone, connections are refused (nothing sent).

    Two races are closed: a connection waiting in the listen queue as the workers stop
    (it used to be reset when the listener closed), and a keep-alive client's next
    request sent as the stopping worker closed its idle connection (it used to be lost)."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--disable-logging", ready=("127.0.0.1", port))

    def stop():
        time.sleep(0.6)
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0

    clients = run_clients(port, 0.3, during=stop)
    outcomes = outcomes_of(clients)
    assert (set(outcomes), outcomes["2xx"] > 100, outcomes["refused"] > 0) == (
        {"2xx", "refused"}, True, True), outcomes


def daemon_and_kept_alive_connection(daemon, processes):
    """A daemon on an HTTP socket, and a kept-alive connection that has had one answer."""
    import http.client
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", str(processes),
               ready=("127.0.0.1", port))
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/sleep?seconds=0")
    assert kept.getresponse().read()
    return d, port, kept


def test_requests_queued_or_on_their_way_at_a_sigterm_stop_are_answered(daemon):
    """One request thread, busy with a 1 s request when SIGTERM comes. Waiting for it:
    three connections in the listen queue with their requests sent, and a kept-alive
    connection whose next request is sent just after the stop. Each is answered 200 with
    `Connection: close`; a connection tried during the stop does not begin, and is
    refused once the daemon is gone."""
    import http.client
    d, port, kept = daemon_and_kept_alive_connection(daemon, processes=1)
    slow = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    slow.request("GET", "/sleep?seconds=1")
    time.sleep(0.2)
    queued = []
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/sleep?seconds=0")
        queued.append(conn)
    d.signal(signal.SIGTERM)
    time.sleep(0.1)
    kept.request("GET", "/sleep?seconds=0")
    # A connection tried during the stop does not begin (its SYN is dropped).
    d.wait_log("SIGTERM: finishing in-flight requests")  # the worker's: the master is done
    with pytest.raises(TimeoutError):
        socket.create_connection(("127.0.0.1", port), timeout=0.3)
    assert d.proc.poll() is None, "still stopping: the connection was not taken"
    answers = []
    for conn in [slow, *queued, kept]:
        response = conn.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Connection")))
    assert answers[1:] == [(200, "close")] * 4, answers
    assert answers[0][0] == 200, answers
    assert d.wait_exit() == 0
    # Tried again once the daemon is gone, it is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_request_sent_just_after_a_sigterm_on_an_idle_connection_is_answered(daemon):
    """Every thread is idle when SIGTERM comes; a kept-alive client sends its next
    request a tenth of a second later: answered, with `Connection: close`."""
    d, _, kept = daemon_and_kept_alive_connection(daemon, processes=2)
    d.signal(signal.SIGTERM)
    time.sleep(0.1)
    kept.request("GET", "/sleep?seconds=0")
    response = kept.getresponse()
    assert (response.status, response.getheader("Connection"), response.read().isdigit()) == (200, "close", True)
    assert d.wait_exit() == 0


def test_a_request_followed_by_a_half_close_is_answered(daemon):
    """6 clients at once, 100 requests each, every one followed by shutdown(SHUT_WR) as
    some clients do once their request is sent: every one gets its whole answer."""
    import concurrent.futures
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2", "--threads", "2",
           ready=("127.0.0.1", port))

    def client(c):
        answered = 0
        for i in range(100):
            n = c * 1000 + i
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                body = f"n={n}"
                s.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
                s.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            answered += data.startswith(b"HTTP/1.1 200") and data.endswith(body.encode())
        return answered

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(client, range(6))) == [100] * 6


def test_a_response_written_as_the_daemon_stops_says_connection_close(daemon):
    """A kept-alive client must not send its next request on a connection the stopping
    daemon is about to close: the last response says so. A worker replaced while the
    others serve (max-requests here) keeps it alive: its connections are handed over."""
    import http.client
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--max-requests", "2",
               ready=("127.0.0.1", port))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = []
    for _ in range(2):
        conn.request("GET", "/sleep?seconds=0")
        response = conn.getresponse()
        headers.append((response.getheader("Connection"), response.read()))
    # The second request retired the worker (max-requests 2), still keeping the connection
    # alive: the next request on it goes to the replacement.
    assert [h[0] for h in headers] == [None, None]
    d.wait_log("request 2 started, max-requests = 2")
    stopper = threading.Timer(0.3, d.signal, (signal.SIGTERM,))
    stopper.start()
    conn.request("GET", "/sleep?seconds=1")
    response = conn.getresponse()
    assert (response.status, response.getheader("Connection")) == (200, "close")
    assert response.read() != headers[0][1], "served by the replacement worker"
    assert d.wait_exit() == 0


class KeptAlive:
    """One kept-alive HTTP/1.1 connection on a raw socket: a request can be sent without
    reading its answer yet."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, path):
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def read(self):
        """(status, body), or None if the connection ended without an answer."""
        client = Client(0, keep_alive=True)
        client.sock, client.buffer = self.sock, self.buffer
        try:
            head, body = client.read_response()
        except (ConnectionError, OSError, EOFError):
            return None
        self.buffer = client.buffer
        return int(head.split(b" ")[1]), body

    def ask(self, path):
        self.send(path)
        return self.read()


def _kept_alive_on_each(port, workers):
    """`held_by_each` (conftest) for kept-alive HTTP connections, three on each worker."""
    return held_by_each(lambda: KeptAlive(port), lambda conn: int(conn.ask("/pid")[1]),
                        workers, at_least=3)


def test_requests_on_a_busy_workers_idle_connections_go_to_a_free_one(daemon):
    """Head-of-line blocking over HTTP: while a request runs 3 s, requests that arrive on
    the other kept-alive connections its worker holds are answered at once by the free
    worker, on the same connections."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               ready=("127.0.0.1", port))
    held = _kept_alive_on_each(port, 2)
    busy_pid = next(iter(held))
    slow, *waiting = held[busy_pid]
    slow.send("/sleep?seconds=3")
    time.sleep(0.3)
    started = time.monotonic()
    for conn in waiting:
        conn.send("/pid")
    answers = [conn.read() for conn in waiting]
    took = time.monotonic() - started
    assert [a and a[0] for a in answers] == [200] * len(waiting), answers
    assert {int(a[1]) for a in answers} == set(held) - {busy_pid}
    assert took < 1.5, f"the requests waited {took:.1f} s for the busy worker"
    assert slow.read()[0] == 200
    # Each connection still serves, wherever it is now.
    assert all(conn.ask("/pid")[0] == 200 for conn in waiting)
    assert "cannot hand" not in d.log(), d.log()


def test_a_pipelining_clients_half_sent_request_stays_with_its_worker(daemon):
    """A client that pipelines sends its second request partly with the first: hyper holds
    that part. While the worker runs a slow request, the rest arrives: the connection stays
    with its worker (the part hyper holds could not go with it) and the request is answered
    there, after the slow one, instead of reaching another worker cut in two (a 400)."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               ready=("127.0.0.1", port))
    held = _kept_alive_on_each(port, 2)
    busy_pid = next(iter(held))
    slow, pipelining, plain, *_ = held[busy_pid]
    pipelining.sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHo")
    first = pipelining.read()
    assert first is not None and (first[0], int(first[1])) == (200, busy_pid), first
    slow.send("/sleep?seconds=2")
    time.sleep(0.5)  # the worker is in the slow request; the mover looks every few ms
    # A client that does not pipeline, on the same busy worker, is still moved: answered
    # by the other worker while the slow request runs.
    started = time.monotonic()
    answer = plain.ask("/pid")
    assert answer is not None and answer[0] == 200 and int(answer[1]) != busy_pid, answer
    assert time.monotonic() - started < 1.2, "answered only after the slow request"
    pipelining.sock.sendall(b"st: x\r\n\r\n")
    second = pipelining.read()
    assert second is not None and second[0] == 200 and int(second[1]) == busy_pid, second
    assert slow.read()[0] == 200
    assert "cannot hand" not in d.log(), d.log()


@pytest.mark.parametrize("other", ["free", "busy"])
def test_a_killed_worker_loses_only_the_request_it_was_running(daemon, other):
    """SIGKILL takes the request the worker was running; requests sent meanwhile on the
    other kept-alive connections it held are answered by another worker, not lost with it:
    at once when the other worker is free; when it is busy too, they wait in the shared
    queue (not in the killed worker) for the first worker free."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               ready=("127.0.0.1", port))
    held = _kept_alive_on_each(port, 2)
    killed_pid, other_pid = list(held)
    slow, *waiting = held[killed_pid]
    busy = held[other_pid][0]
    slow.send("/sleep?seconds=5")
    if other == "busy":
        busy.send("/sleep?seconds=1.5")
    time.sleep(0.3)
    for conn in waiting:
        conn.send("/pid")
    time.sleep(0.3)
    os.kill(killed_pid, signal.SIGKILL)
    d.wait_log(rf"\(pid {killed_pid}\) was killed by SIGKILL")
    answers = [conn.read() for conn in waiting]
    assert [a and a[0] for a in answers] == [200] * len(waiting), answers
    assert killed_pid not in {int(a[1]) for a in answers}
    assert slow.read() is None, "the request it was running is lost with it"
    if other == "busy":
        assert busy.read()[0] == 200


def test_max_requests_is_exact_over_http(daemon):
    """max-requests N over HTTP: no worker serves more than N, with 16 kept-alive clients
    on 2 workers of 4 threads; a request past the limit stays in the socket and goes to a
    worker that serves on. Nothing is lost."""
    import concurrent.futures
    import re
    import requests
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--threads", "4", "--max-requests", "20", ready=("127.0.0.1", port))

    def client(_):
        with requests.Session() as s:
            return [s.get(f"http://127.0.0.1:{port}/sleep?seconds=0", timeout=10).status_code
                    for _ in range(25)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = [code for codes in pool.map(client, range(16)) for code in codes]
    assert statuses == [200] * 400
    served = {}
    for pid, count in re.findall(r"\[pid: (\d+)\|app: \d+\|req: (\d+)/", d.log()):
        served[pid] = max(served.get(pid, 0), int(count))
    assert len(served) >= 400 // 20 and max(served.values()) <= 20, sorted(served.values())


def _stall_then_ask(daemon, sent):
    """A daemon with one thread and socket-timeout 1 s; a client sends `sent` and stops;
    another client asks for /pid, and is answered by the one thread once socket-timeout
    has given up on the first: (daemon, the stalled socket)."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--socket-timeout", "1",
               ready=("127.0.0.1", port))
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    stalled.sendall(sent)
    time.sleep(0.2)
    started = time.monotonic()
    answer = KeptAlive(port).ask("/pid")
    took = time.monotonic() - started
    assert answer and answer[0] == 200, answer
    assert 0.5 < took < 2.5, f"answered after {took:.1f} s"
    return d, stalled


def test_a_request_head_that_stalls_holds_the_thread_for_socket_timeout_only(daemon):
    """A client that sends part of a request head and stops holds its thread (the thread
    reads the request it admitted, as a uWSGI thread does) for socket-timeout at most: the
    connection is then closed, and the next client is served by the one thread."""
    _, stalled = _stall_then_ask(daemon, b"GET /pid HTTP/1.1\r\nHost: x\r\n")
    assert stalled.recv(65536) == b"", "the stalled connection is closed"


def test_a_request_body_that_stalls_holds_the_thread_for_socket_timeout_only(daemon):
    """The body is read while the request holds its thread: a client that stops sending
    it is answered 400 and closed after socket-timeout (1 s here), and the next client is
    served by the one thread."""
    d, stalled = _stall_then_ask(daemon, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    said = b""
    while chunk := stalled.recv(65536):
        said += chunk
    assert said.startswith(b"HTTP/1.1 400") and b"connection: close" in said.lower(), said
    assert "nothing came for socket-timeout (1 s) after 3 bytes" in d.log(), d.log()
