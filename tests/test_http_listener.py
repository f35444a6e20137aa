"""The daemon's own HTTP listener loses nothing: clients that record every request's
outcome, with keep-alive and with `Connection: close`, through max-requests recycling
and reloads; a request followed by shutdown(SHUT_WR) is answered; a retiring worker's
last response on a kept-alive connection says `Connection: close`."""

import signal
import socket
import threading
import time

from conftest import APPS, free_port, wait_for

APP = APPS / "pep3333.py"


class Client:
    """One HTTP/1.1 client on raw sockets: every request is sent once and counted as
    answered (a whole 200 response) or lost (the connection ended without one)."""

    def __init__(self, port, keep_alive):
        self.port, self.keep_alive = port, keep_alive
        self.answered = self.lost = 0
        self.closes_announced = 0
        self.sock = None

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.buffer = b""

    def request(self, n):
        if self.sock is None:
            self.connect()
        connection = "keep-alive" if self.keep_alive else "close"
        try:
            body = f"n={n}".encode()
            self.sock.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head, body = self.read_response()
        except (ConnectionError, OSError, EOFError):
            self.lost += 1
            self.sock.close()
            self.sock = None
            return
        if not head.startswith(b"HTTP/1.1 200") or body != f"n={n}".encode():
            self.lost += 1
        else:
            self.answered += 1
        if not self.keep_alive or b"\r\nconnection: close" in head.lower():
            self.closes_announced += self.keep_alive
            self.sock.close()
            self.sock = None

    def read_response(self):
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(self.buffer) < length:
            self.fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk


def run_clients(port, seconds, during=None):
    clients = [Client(port, keep_alive=i % 3 != 0) for i in range(6)]
    stop = threading.Event()

    def loop(client):
        n = 0
        while not stop.is_set():
            client.request(n)
            n += 1

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
    return clients


def test_nothing_is_lost_through_max_requests_recycling(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--max-requests", "40", "--disable-logging", ready=("127.0.0.1", port))
    clients = run_clients(port, 4)
    answered, lost = sum(c.answered for c in clients), sum(c.lost for c in clients)
    recycles = d.log().count("max-requests")
    assert recycles >= 5, d.log()
    assert (lost, answered > 500) == (0, True), (lost, answered, recycles)


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
    answered, lost = sum(c.answered for c in clients), sum(c.lost for c in clients)
    assert (lost, answered > 200) == (0, True), (lost, answered)


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
