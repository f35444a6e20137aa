"""An app's early answer reaches the client: a request body the app does not read (or
reads in part) never turns the answer into a 502, on any path from client to app, and a
kept-alive connection never carries body bytes into the next request.

The failure this guards against is a race (the daemon closing while nginx still sends
the body resets the connection), so every case runs 20 rounds and must not fail once."""

import socket

import pytest
import requests

from conftest import APPS, free_port

APP = APPS / "early_answer.py"
SIZES = [0, 100, 64 * 1024, 1 << 20, 64 << 20]
ROUNDS = 20


def upstream_block(addr, keepalive):
    return f"upstream app {{ server {addr}; {'keepalive 8;' if keepalive else ''} }}"


PATHS = {
    # name: (daemon socket kind, nginx directives, http block, module)
    "uwsgi_pass-unix": ("unix", "include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock};", "", False),
    "uwsgi_pass-tcp": ("tcp", "include /etc/nginx/uwsgi_params; uwsgi_pass {tcp};", "", False),
    "wsgi_pass-keepalive": ("unix", "wsgi_pass app;", "keepalive-unix", True),
    "wsgi_pass-keepalive-unbuffered": ("unix", "wsgi_pass app; wsgi_request_buffering off;", "keepalive-unix", True),
    "wsgi_pass-keepalive-tcp": ("tcp", "wsgi_pass app;", "keepalive-tcp", True),
    "wsgi_pass-no-keepalive": ("unix", "wsgi_pass unix:{sock};", "", True),
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """One daemon (unix and TCP sockets) and an nginx per path, shared by the cases."""
    from conftest import Daemon, Nginx
    tmp = tmp_path_factory.mktemp("early")
    sock, port = str(tmp / "app.sock"), free_port()
    d = Daemon(tmp, ["--socket", sock, "--socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
                     "--processes", "2", "--limit-post", "100m"])
    d.wait_ready(sock)
    started = {}
    for name, (_, directives, http, module) in PATHS.items():
        addr = f"unix:{sock}" if http.endswith("unix") else f"127.0.0.1:{port}"
        http_extra = upstream_block(addr, keepalive=True) if http else ""
        started[name] = Nginx(tmp, None, module=module, http_extra=http_extra,
                              directives=directives.format(sock=sock, tcp=f"127.0.0.1:{port}"),
                              location_extra="client_max_body_size 100m;")
    yield d, started
    for n in started.values():
        n.stop()
    d.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("path", sorted(PATHS))
def test_unread_body_answer_reaches_the_client_through_nginx(stacks, path, size):
    d, started = stacks
    url = started[path].url
    body = b"x" * size
    # A new client connection per request: nginx itself may close a client connection
    # whose body it did not read to the end (with request buffering off), which is
    # between nginx and its client. The connections between nginx and the daemon are the
    # ones kept alive and checked here.
    for _ in range(ROUNDS):
        for route, status, text in (("/noread", 403, "forbidden\n"), ("/read-some", 200, "read 1000\n")):
            r = requests.post(url + route, data=body, timeout=60)
            assert (r.status_code, r.text) == (status, text), f"{path} {route} {size} B: {r.text[:200]}"
        # The next request on a kept-alive upstream connection reads its own body only.
        r = requests.post(url + "/read-all", data=b"y" * 10, timeout=60)
        assert r.text == "read 10\n", f"{path}: leaked body bytes: {r.text!r}"


def raw_http(port, head: bytes, body: bytes, chunked=False):
    """Sends a request, body and all, on a new connection; returns the response read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            if chunked:
                for i in range(0, len(body), 1 << 16):
                    piece = body[i:i + (1 << 16)]
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and stopped reading: what it answered still counts
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("framing", ["content-length", "chunked", "keep-alive-session"])
def test_unread_body_answer_reaches_the_client_over_http(daemon, size, framing):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, ready=("127.0.0.1", port))
    body = b"x" * size
    for _ in range(ROUNDS):
        if framing == "keep-alive-session":
            with requests.Session() as s:
                r = s.post(f"http://127.0.0.1:{port}/noread", data=body, timeout=60)
                assert (r.status_code, r.text) == (403, "forbidden\n")
                assert s.post(f"http://127.0.0.1:{port}/read-all", data=b"y" * 10).text == "read 10\n"
            continue
        if framing == "chunked":
            head = b"POST /noread HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            head = b"POST /noread HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size
        response = raw_http(port, head, body, chunked=framing == "chunked")
        assert response.startswith(b"HTTP/1.1 403 Forbidden"), response[:200]
        assert response.endswith(b"forbidden\n")


DAEMON_ANSWERS = {
    # name: (extra daemon options, path, the status nginx passes on)
    "limit-post 413": (["--limit-post", "512k"], "/read-all", 413),
    "app exception 500": ([], "/raise", 500),
    "harakiri 504": (["--harakiri", "1"], "/slow-before-reading", 504),
}


@pytest.mark.parametrize("answer", sorted(DAEMON_ANSWERS))
@pytest.mark.parametrize("module", [False, True], ids=["uwsgi_pass", "wsgi_pass"])
def test_answers_the_daemon_writes_itself_reach_the_client(daemon, nginx, app_sock, tmp_path, answer, module):
    extra, route, status = DAEMON_ANSWERS[answer]
    app = tmp_path / "slow.py"
    app.write_text(APP.read_text() + "\n\n_inner = application\n\n"
                   "def application(environ, start_response):\n"
                   "    if environ.get('PATH_INFO') == '/slow-before-reading':\n"
                   "        import time; time.sleep(30)\n"
                   "    return _inner(environ, start_response)\n")
    daemon("--socket", app_sock, "--wsgi-file", app, *extra, ready=app_sock)
    n = nginx(f"unix:{app_sock}", module=module,
              location_extra="client_max_body_size 100m; wsgi_read_timeout 60s;" if module
              else "client_max_body_size 100m; uwsgi_read_timeout 60s;")
    rounds = 3 if answer.startswith("harakiri") else 10
    for size in (1 << 20, 16 << 20):
        for _ in range(rounds):
            r = requests.post(n.url + route, data=b"x" * size, timeout=60)
            assert r.status_code == status, f"{answer} {size} B: {r.status_code} {r.text[:200]}"


@pytest.mark.parametrize("module", [False, True], ids=["uwsgi_pass", "wsgi_pass"])
def test_a_refused_head_with_a_large_body_is_answered_not_reset(daemon, nginx, app_sock, module):
    """Vars over buffer-size: the daemon answers 431 before reading anything else; the
    body behind the head must not turn that answer into a 502."""
    daemon("--socket", app_sock, "--wsgi-file", APP, "--buffer-size", "4096", ready=app_sock)
    n = nginx(f"unix:{app_sock}", module=module, location_extra="client_max_body_size 100m;")
    for size in (1 << 20, 16 << 20):
        for _ in range(5):
            r = requests.post(n.url + "/noread", data=b"x" * size, headers={"X-Big": "y" * 5000}, timeout=60)
            assert r.status_code == 431, f"{size} B: {r.status_code}"


def test_a_lingering_close_is_bounded_and_never_blocks_the_worker(daemon, app_sock):
    """One worker, one thread. A peer that declares a 1 GiB body and stops sending after
    the answer is closed after socket-timeout (1 s here); one that keeps sending holds no
    request up: the worker answers others meanwhile, every one of them."""
    from test_bad_input import packet, request_vars, send_raw
    import threading
    import time
    daemon("--socket", app_sock, "--wsgi-file", APP, "--socket-timeout", "1", ready=app_sock)
    head = packet(request_vars("/noread", method="POST", body_length=1 << 30))

    with socket.socket(socket.AF_UNIX) as silent:
        silent.settimeout(10)
        silent.connect(app_sock)
        silent.sendall(head + b"x" * 1000)
        answer = b""
        while not answer.endswith(b"forbidden\n"):
            answer += silent.recv(65536)
        assert answer.startswith(b"HTTP/1.1 403 Forbidden")
        started = time.monotonic()
        assert silent.recv(65536) == b""  # closed by the daemon, not by us
        assert time.monotonic() - started < 3

    stop = threading.Event()

    def keep_sending(s):
        try:
            while not stop.is_set():
                s.sendall(b"x" * 65536)
        except OSError:
            pass

    with socket.socket(socket.AF_UNIX) as talker:
        talker.connect(app_sock)
        talker.sendall(head)
        sender = threading.Thread(target=keep_sending, args=(talker,))
        sender.start()
        outcomes = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = send_raw(app_sock, packet(request_vars("/")))
            outcomes.append((response.split(b"\r\n", 1)[0], time.monotonic() - started < 1))
        stop.set()
        sender.join()
    assert outcomes and set(outcomes) == {(b"HTTP/1.1 200 OK", True)}, outcomes[:5]
