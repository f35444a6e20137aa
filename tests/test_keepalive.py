"""Connection reuse over the uwsgi protocol (docs/protocol.md), from the daemon's side:
a client that sends NGX_WSGI_KEEPALIVE=1 gets delimited responses on one connection;
one that does not (stock uwsgi_pass) gets uWSGI's close-after-response."""

import http.client
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import APPS, VENV, can_connect, held_by_each, wait_for
from test_bad_input import packet, request_vars

KEEPALIVE = [("NGX_WSGI_KEEPALIVE", "chunked")]


class UwsgiConnection:
    """A client that keeps one uwsgi connection, as nginx's keepalive pool will."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def request(self, path, method="GET", body=b"", keepalive=True, extra=()):
        pairs = request_vars(path, method, body_length=len(body) if body else None,
                             extra=[*(KEEPALIVE if keepalive else []), *extra])
        self.sock.sendall(packet(pairs) + body)
        response = http.client.HTTPResponse(self.sock, method=method)
        response.begin()
        return response, response.read()

    def closed_by_peer(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@pytest.fixture
def ka_daemon(daemon, app_sock, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(200_000))
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py",
               env={"BIG_FILE": str(big), "NGX_WSGI_IDLE_TIMEOUT": "1"}, ready=app_sock)
    return d, big


def test_many_requests_share_one_connection(ka_daemon, app_sock):
    d, big = ka_daemon
    conn = UwsgiConnection(app_sock)
    # Content-Length from the app
    r, body = conn.request("/pid")
    assert r.status == 200 and r.getheader("Connection") == "keep-alive" and body.isdigit()
    # no length: chunked
    r, body = conn.request("/generator")
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(5))
    # HEAD and 204: no body at all
    r, body = conn.request("/big", method="HEAD")
    assert (r.status, r.getheader("Content-Length"), body) == (200, "65536", b"")
    r, body = conn.request("/no-content")
    assert (r.status, body) == (204, b"")
    # a request body, and a file sent with sendfile up to its Content-Length-less end
    r, body = conn.request("/echo", method="POST", body=b"x" * 30000)
    assert body == b"x" * 30000
    r, body = conn.request("/raw/filewrapper")
    assert r.getheader("Transfer-Encoding") == "chunked" and body == big.read_bytes()
    r, body = conn.request("/pid")
    assert r.status == 200
    conn.close()
    # The log line follows the response: wait for it.
    wait_for(lambda: len(re.findall(r"GET /pid => generated .*\(HTTP/1.1 200\)", d.log())) == 2, 5, "both /pid requests in the log")


def test_a_request_sent_while_the_thread_was_busy_past_the_idle_timeout_is_answered(ka_daemon, app_sock):
    """The idle timeout (1 s here) is for a connection nothing comes on. A request sent on
    a kept-alive connection while the one thread runs a longer request (2.5 s) is answered
    once the thread is free, not dropped as if the connection had expired."""
    kept = UwsgiConnection(app_sock)
    r, _ = kept.request("/pid")
    assert r.status == 200
    slow = socket.socket(socket.AF_UNIX)
    slow.settimeout(10)
    slow.connect(app_sock)
    slow.sendall(packet(request_vars("/sleep", extra=[("QUERY_STRING", "seconds=2.5")])))
    time.sleep(0.3)  # the thread is in the slow request
    started = time.monotonic()
    r, body = kept.request("/pid")
    assert r.status == 200 and body.isdigit(), "the request waited for the thread and was answered"
    assert time.monotonic() - started > 1.5, "it did wait for the slow request"
    slow_answer = http.client.HTTPResponse(slow, method="GET")
    slow_answer.begin()
    assert slow_answer.status == 200
    slow.close()
    kept.close()


def test_a_client_that_reads_lengths_only_is_never_sent_chunks(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    r, body = conn.request("/pid", extra=[("NGX_WSGI_KEEPALIVE", "1")], keepalive=False)
    assert r.getheader("Connection") == "keep-alive" and body.isdigit()
    r, body = conn.request("/generator", extra=[("NGX_WSGI_KEEPALIVE", "1")], keepalive=False)
    assert r.getheader("Connection") is None and r.getheader("Transfer-Encoding") is None
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(5))
    assert conn.closed_by_peer(), "the body was delimited by closing"


def test_protocol_var_stays_out_of_the_environ(ka_daemon, app_sock):
    import json
    conn = UwsgiConnection(app_sock)
    _, body = conn.request("/environ")
    assert "NGX_WSGI_KEEPALIVE" not in json.loads(body)


def test_without_the_var_the_daemon_closes_as_uwsgi_does(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    r, body = conn.request("/pid", keepalive=False)
    assert r.status == 200 and r.getheader("Connection") is None
    assert conn.closed_by_peer()


def test_unread_request_body_is_drained_before_the_next_request(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    r, _ = conn.request("/pid", method="POST", body=b"y" * 20000)  # /pid never reads it
    assert r.status == 200
    r, body = conn.request("/echo", method="POST", body=b"next")
    assert body == b"next"


def test_a_large_unread_body_closes_the_connection(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    r, _ = conn.request("/pid", method="POST", body=b"y" * 200_000)
    assert r.status == 200
    assert conn.closed_by_peer()


def test_a_body_shorter_than_its_content_length_closes_the_connection(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    conn.sock.sendall(packet(request_vars("/raw/short-body", extra=KEEPALIVE)))
    assert b"Content-Length: 10" in conn.sock.recv(4096)
    assert conn.closed_by_peer(), "a response that broke its framing ends the connection"


def test_idle_connections_are_closed_after_the_idle_timeout(ka_daemon, app_sock):
    conn = UwsgiConnection(app_sock)
    conn.request("/pid")
    started = time.monotonic()
    assert conn.closed_by_peer()
    assert 0.5 < time.monotonic() - started < 5
    assert "[error]" not in ka_daemon[0].log(), "closing an idle connection is not an error"


def test_a_request_sent_right_behind_a_body_is_served_next(ka_daemon, app_sock):
    """A body longer than the first read leaves its end in the socket; the read of that
    end takes what follows too (the next request, when a client sends it at once), and
    keeps it for the next request: both are answered, in order, on the one connection."""
    conn = UwsgiConnection(app_sock)
    conn.request("/pid")  # kept alive from now: its next request is read 8 KiB at first
    body = os.urandom(20_000)
    first = packet(request_vars("/echo", "POST", body_length=len(body), extra=KEEPALIVE)) + body
    conn.sock.sendall(first + packet(request_vars("/pid", extra=KEEPALIVE)))
    # Read raw: both answers may come in one read, which http.client would not share.
    data = b""
    answers = []
    while len(answers) < 2:
        if b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(rest) >= length:
                answers.append((head.split(b"\r\n")[0], rest[:length]))
                data = rest[length:]
                continue
        chunk = conn.sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
    assert answers[0] == (b"HTTP/1.1 200 OK", body)
    assert answers[1][0] == b"HTTP/1.1 200 OK" and answers[1][1].isdigit(), answers[1]


def test_graceful_stop_closes_idle_connections_soon(ka_daemon, app_sock):
    """An idle connection stays open a quarter of a second for a request nginx may have
    sent as the stop came (below), then is closed: the stop does not wait for it."""
    d, _ = ka_daemon
    conn = UwsgiConnection(app_sock)
    conn.request("/pid")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert conn.closed_by_peer()
    assert time.monotonic() - started < 1, "did not wait for the idle connection"
    assert d.wait_exit(10) == 0
    assert time.monotonic() - started < 3


def test_requests_queued_or_on_their_way_at_a_sigterm_stop_are_answered(ka_daemon, app_sock):
    """One request thread, busy with a 1 s request when SIGTERM comes. Waiting for it:
    three connections in the listen queue with their requests sent, and a kept-alive
    connection whose next request is sent just after the stop (nginx sends on a cached
    connection whenever a client asks). Each is answered 200 and then closed; a
    connection tried during the stop is refused."""
    d, _ = ka_daemon
    kept = UwsgiConnection(app_sock)
    kept.request("/pid")
    slow = UwsgiConnection(app_sock)
    slow.sock.sendall(packet(request_vars("/sleep")))
    time.sleep(0.2)
    queued = [UwsgiConnection(app_sock) for _ in range(3)]
    for conn in queued:
        conn.sock.sendall(packet(request_vars("/pid")))
    d.signal(signal.SIGTERM)
    time.sleep(0.1)
    kept.sock.sendall(packet(request_vars("/pid", extra=KEEPALIVE)))

    def refused():
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(app_sock)
            except ConnectionRefusedError:
                return True
            return False

    wait_for(refused, 2, "new connections refused as the daemon stops")
    assert d.proc.poll() is None, "refused by the stopping daemon, not because it is gone"
    answers = []
    for conn in [slow, *queued, kept]:
        response = http.client.HTTPResponse(conn.sock)
        response.begin()
        answers.append((response.status, response.read().isdigit(), conn.closed_by_peer()))
    assert answers == [(200, True, True)] * 5, answers
    assert d.wait_exit(10) == 0


def test_a_tcp_socket_queue_is_answered_at_a_sigterm_stop(daemon):
    """The same over TCP (`socket = 127.0.0.1:PORT`, nginx on another host, say): with the
    only thread busy when SIGTERM comes, two queued connections are answered, and a
    connection tried during the stop does not begin."""
    from conftest import free_port
    port = free_port()
    d = daemon("--socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", ready=("127.0.0.1", port))
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(packet(request_vars("/sleep")))
    time.sleep(0.2)
    queued = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    for conn in queued:
        conn.sendall(packet(request_vars("/pid")))
    d.signal(signal.SIGTERM)
    d.wait_log("SIGTERM: finishing in-flight requests")  # the worker's: the master is done
    with pytest.raises(TimeoutError):
        socket.create_connection(("127.0.0.1", port), timeout=0.3)
    assert d.proc.poll() is None, "still stopping: the connection was not taken"
    answers = []
    for conn in [slow, *queued]:
        response = http.client.HTTPResponse(conn)
        response.begin()
        answers.append((response.status, response.read().isdigit()))
    assert answers == [(200, True)] * 3, answers
    assert d.wait_exit(10) == 0


def test_a_request_sent_just_after_a_sigterm_on_an_idle_connection_is_answered(ka_daemon, app_sock):
    """The worker is idle when SIGTERM comes; nginx sends a request on its cached
    connection a tenth of a second later: answered, and the connection then closed."""
    d, _ = ka_daemon
    kept = UwsgiConnection(app_sock)
    kept.request("/pid")
    d.signal(signal.SIGTERM)
    time.sleep(0.1)
    response, body = kept.request("/pid")
    assert (response.status, body.isdigit(), kept.closed_by_peer()) == (200, True, True)
    assert d.wait_exit(10) == 0


def test_real_uwsgi_ignores_the_var_and_closes(tmp_path):
    """The compatibility claim of docs/protocol.md, against uWSGI itself."""
    sock = str(tmp_path / "uwsgi.sock")
    proc = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--socket", sock, "--wsgi-file", str(APPS / "pep3333.py"),
                             "--disable-logging"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: can_connect(sock), 15, "uWSGI")
        conn = UwsgiConnection(sock)
        # uWSGI leaves a missing SCRIPT_NAME out of the environ, which the validator refuses.
        r, body = conn.request("/pid", extra=[("SCRIPT_NAME", "")])
        assert r.status == 200 and body.isdigit()
        assert r.getheader("Connection") != "keep-alive"
        assert conn.closed_by_peer()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_peer_that_closes_with_the_response_unread_is_not_an_error(ka_daemon, app_sock):
    """nginx closes a kept-alive connection with our last response unread when its client
    went away: the reset that follows is a close, not an error in the log."""
    d, _ = ka_daemon
    conn = UwsgiConnection(app_sock)
    conn.request("/pid")  # served over the connection, which is then kept alive
    conn.sock.sendall(packet(request_vars("/environ", "GET", extra=KEEPALIVE)))
    time.sleep(0.3)  # the daemon has answered and waits for the next request
    conn.close()  # the response unread: the kernel resets the connection
    d.wait_log(r"GET /environ => generated .*\(HTTP/1.1 200\)")
    time.sleep(0.3)
    assert "[error]" not in d.log(), d.log()
    assert UwsgiConnection(app_sock).request("/pid", keepalive=False)[1].isdigit()


def test_var_names_are_right_whatever_order_they_come_in(ka_daemon, app_sock):
    """The worker reuses the str of a var name it saw at the same position last time: a
    different name there, a shifted order, or names in another order must still be exact."""
    import json
    conn = UwsgiConnection(app_sock)
    orders = [
        [("HTTP_X_FIRST", "1"), ("HTTP_X_SECOND", "2")],
        [("HTTP_X_SECOND", "2"), ("HTTP_X_FIRST", "1")],
        [("HTTP_X_OTHER", "3")],
        [("HTTP_X_FIRST", "1"), ("HTTP_X_THIRD", "4"), ("HTTP_X_SECOND", "2")],
    ]
    for extra in orders:
        _, body = conn.request("/environ", extra=extra)
        environ = json.loads(body)
        sent = {k: v for k, v in extra}
        got = {k: v for k, v in environ.items() if k.startswith("HTTP_X_")}
        assert got == sent, (extra, got)


def test_max_requests_is_exact_on_kept_alive_connections(daemon, nginx, tmp_path):
    """max-requests N: no worker serves more than N, even with threads serving several
    kept-alive connections from nginx at once; a request that arrives past the limit goes,
    with what was read of it, to a worker that serves on. Nothing is lost."""
    import concurrent.futures
    import requests
    sock = str(tmp_path / "app.sock")
    d = daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", "--processes", "2", "--threads", "4",
               "--max-requests", "20", ready=sock)
    n = nginx(f"unix:{sock}", module=True, directives="wsgi_pass app;",
              http_extra=f"upstream app {{ server unix:{sock}; keepalive 32; }}")

    def client(_):
        with requests.Session() as s:
            return [s.get(f"{n.url}/sleep?seconds=0", timeout=10).status_code for _ in range(25)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = [code for codes in pool.map(client, range(16)) for code in codes]
    assert statuses == [200] * 400
    served = {}
    for pid, count in re.findall(r"\[pid: (\d+)\|app: \d+\|req: (\d+)/", d.log()):
        served[pid] = max(served.get(pid, 0), int(count))
    assert len(served) >= 400 // 20 and max(served.values()) <= 20, sorted(served.values())


def _send(conn, path, query="", keepalive=True):
    """Sends a request on a kept-alive connection without reading the answer."""
    pairs = request_vars(path, extra=[*(KEEPALIVE if keepalive else []), ("QUERY_STRING", query)])
    pairs = [p for p in pairs if p != ("QUERY_STRING", "")] if query else pairs
    conn.sock.sendall(packet(pairs))


def _read(conn, method="GET"):
    response = http.client.HTTPResponse(conn.sock, method=method)
    response.begin()
    return response.status, response.read()


def _served_once(app_sock, count):
    """`count` kept-alive connections, each having served one request."""
    conns = [UwsgiConnection(app_sock) for _ in range(count)]
    for conn in conns:
        assert conn.request("/pid")[0].status == 200
    return conns


def _ask_all(conns):
    """Sends a request on every connection at once, then reads every answer: (answers,
    seconds until the last)."""
    started = time.monotonic()
    for conn in conns:
        _send(conn, "/pid")
    answers = [_read(conn) for conn in conns]
    return answers, time.monotonic() - started


def _connections_on_each(app_sock, workers):
    """`held_by_each` (conftest) for kept-alive uwsgi connections, two on each worker.
    The daemon must run with `NORMAL_SCHEDULING`: under SCHED_BATCH, connections opened one
    after another all go to the worker that answered the last (199 of 200 in a run), as
    the other's thread does not get a core to accept before it."""
    return held_by_each(lambda: UwsgiConnection(app_sock), lambda conn: int(conn.request("/pid")[1]),
                        workers, at_least=2)


# What `_connections_on_each` needs (sched-batch is on by default with 2 workers on 2 cores).
NORMAL_SCHEDULING = "--sched-batch=false"


@pytest.mark.parametrize("layout", [("--processes", "2"), ("--threads", "2")], ids=["processes", "threads"])
def test_a_busy_threads_idle_connections_go_to_a_free_thread(daemon, app_sock, layout):
    """Head-of-line blocking: while a request runs 3 s, the other idle connections its
    thread held are taken over by the free one, and their requests are answered at once
    (they waited for the slow one before). The slow one is answered too."""
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", *layout, NORMAL_SCHEDULING,
               ready=app_sock)
    # With threads, both answer with one pid: tell them apart by a connection served
    # while the other is busy.
    if layout[0] == "--processes":
        held = _connections_on_each(app_sock, 2)
        busy_pid = next(iter(held))
        slow, *others = held[busy_pid]
        others += [c for pid, conns in held.items() if pid != busy_pid for c in conns]
    else:
        slow, *others = _served_once(app_sock, 8)
    _send(slow, "/sleep", "seconds=3")
    time.sleep(0.3)
    answers, took = _ask_all(others)
    assert all(status == 200 for status, _ in answers), answers
    assert took < 1.5, f"the requests on the busy thread's idle connections waited {took:.1f} s"
    if layout[0] == "--processes":
        assert {int(body) for _, body in answers} == set(held) - {busy_pid}
    # Each connection still serves, wherever it is now.
    for conn in others:
        assert conn.request("/pid")[0].status == 200
    assert _read(slow)[0] == 200
    assert "cannot hand" not in d.log(), d.log()


def test_a_connection_taken_over_from_a_busy_thread_closes_cleanly(daemon, app_sock):
    """A connection that moved while its first thread is still busy ends as any other: a
    response delimited by the close gets its end of file at once, not when the slow
    request ends (the busy worker still has the descriptor)."""
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--processes", "2", NORMAL_SCHEDULING,
           ready=app_sock)
    held = _connections_on_each(app_sock, 2)
    busy_pid = next(iter(held))
    slow, other = held[busy_pid][:2]
    _send(slow, "/sleep", "seconds=4")
    time.sleep(0.3)
    started = time.monotonic()
    response, body = other.request("/pid", keepalive=False)
    assert response.status == 200 and int(body) != busy_pid
    assert other.closed_by_peer()
    assert time.monotonic() - started < 1.5
    assert _read(slow)[0] == 200


def test_with_every_thread_busy_requests_wait_and_are_answered(daemon, app_sock):
    """No thread free: a request on an idle connection waits in the shared queue, and the
    first thread to be free answers it; nothing is lost."""
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--threads", "2", ready=app_sock)
    first, second, *waiting = _served_once(app_sock, 6)
    _send(first, "/sleep", "seconds=1")
    _send(second, "/sleep", "seconds=1.5")
    time.sleep(0.3)
    answers, took = _ask_all(waiting)
    assert [status for status, _ in answers] == [200] * len(waiting)
    # Answered by the first free thread, not after both slow requests.
    assert took < 1.1
    assert _read(first)[0] == 200 and _read(second)[0] == 200
