"""Point 5: bad input gets one clear log line naming the peer and the reason, and the
worker keeps serving everyone else."""

import socket
import struct
import time

import pytest
import requests

from conftest import APPS, wait_for


def packet(pairs, modifier1=0):
    vars_block = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs)
    )
    return struct.pack("<BHB", modifier1, len(vars_block), 0) + vars_block


def request_vars(path="/pid", method="GET", body_length=None, extra=()):
    pairs = [("REQUEST_METHOD", method), ("PATH_INFO", path), ("QUERY_STRING", ""), ("SERVER_NAME", "test"),
             ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "192.0.2.7")]
    if body_length is not None:
        pairs.append(("CONTENT_LENGTH", str(body_length)))
    return pairs + list(extra)


def send_raw(sock_path, data, half_close=True, read=True):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        if not read:
            return b""
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture
def uwsgi_daemon(daemon, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--buffer-size", "8192", ready=app_sock)
    pid_before = wait_for(d.worker_pids, 5, "the worker to start")
    yield d
    # After every kind of bad input: the same worker serves a good request.
    response = send_raw(app_sock, packet(request_vars("/pid")))
    assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
    assert d.worker_pids() == pid_before, "no worker died or was respawned"


def test_good_request_over_raw_uwsgi(uwsgi_daemon, app_sock):
    response = send_raw(app_sock, packet(request_vars("/pid")))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body.isdigit()


def test_short_header(uwsgi_daemon, app_sock):
    assert send_raw(app_sock, b"\x00\x10") == b""
    uwsgi_daemon.wait_log(r"unix:.*app\.sock: connection closed after 2 of the 4 bytes of the uwsgi header; connection closed")


def test_vars_overrunning_the_datasize(uwsgi_daemon, app_sock):
    # A key claiming 200 bytes inside a 10-byte vars block.
    block = struct.pack("<H", 200) + b"REQUEST_"
    assert send_raw(app_sock, struct.pack("<BHB", 0, len(block), 0) + block) == b""
    uwsgi_daemon.wait_log("uwsgi var key at offset 0 is 200 bytes long but only 8 bytes of the vars block are left")


def test_vars_block_shorter_than_announced(uwsgi_daemon, app_sock):
    assert send_raw(app_sock, struct.pack("<BHB", 0, 500, 0) + b"\x01\x00A") == b""
    uwsgi_daemon.wait_log("connection closed after 3 of the 500 bytes of the uwsgi vars block")


def test_datasize_above_buffer_size(uwsgi_daemon, app_sock):
    big = packet(request_vars(extra=[("HTTP_COOKIE", "c" * 9000)]))
    response = send_raw(app_sock, big)
    assert response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert response.endswith(b"exceeds --buffer-size 8192: raise --buffer-size\n")
    uwsgi_daemon.wait_log(r"uwsgi vars block of 9\d\d\d bytes exceeds --buffer-size 8192: raise --buffer-size")


def test_plain_http_to_a_uwsgi_socket_is_named(uwsgi_daemon, app_sock):
    response = send_raw(app_sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"plain HTTP sent to a uwsgi socket" in response
    uwsgi_daemon.wait_log(r'plain HTTP sent to a uwsgi socket \(the request starts with "GET "\)')


def test_body_shorter_than_content_length(uwsgi_daemon, app_sock):
    data = packet(request_vars("/echo", "POST", body_length=100)) + b"only ten b"
    assert send_raw(app_sock, data) == b""
    uwsgi_daemon.wait_log(r"192\.0\.2\.7 via unix:.*POST /echo: client closed the connection after 10 of 100 body bytes")


def test_bad_content_length(uwsgi_daemon, app_sock):
    assert send_raw(app_sock, packet(request_vars("/echo", "POST", extra=[("CONTENT_LENGTH", "ten")]))) == b""
    uwsgi_daemon.wait_log('CONTENT_LENGTH "ten" is not a number')


def test_client_disconnects_mid_response(uwsgi_daemon, app_sock, tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(app_sock)
        s.sendall(packet(request_vars("/endless")))
        assert s.recv(1024).startswith(b"HTTP/1.1 200 OK")
    uwsgi_daemon.wait_log(r"GET /endless: connection lost while sending the response: .*(Broken pipe|reset)")


def test_connect_and_close_is_not_an_error(uwsgi_daemon, app_sock):
    assert send_raw(app_sock, b"") == b""
    time.sleep(0.2)
    assert "[error]" not in uwsgi_daemon.log()


def test_big_cookies_pass_with_the_default_buffer_size(daemon, nginx, app_sock):
    """uWSGI's default 4096-byte buffer turns ~4 KiB of cookies into a 502."""
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    n = nginx(f"unix:{app_sock}", http_extra="large_client_header_buffers 8 32k;")
    r = requests.get(f"{n.url}/environ", cookies={f"c{i}": "v" * 1000 for i in range(12)})
    assert r.status_code == 200
    assert len(r.json()["HTTP_COOKIE"]) > 12000


def test_nginx_sees_a_bad_gateway_when_the_app_dies_mid_response(daemon, nginx, app_sock):
    """The worker process dying (not just raising) still leaves nginx with a clear 502."""
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    wait_for(lambda: d.worker_pids(), 5, "worker")
    import os, signal
    os.kill(d.worker_pids()[0], signal.SIGKILL)
    d.wait_log(r"worker 1 \(pid \d+\) was killed by SIGKILL; respawning it")
    assert wait_for(lambda: requests.get(f"{n.url}/pid").ok, 10, "a respawned worker to serve")


def test_oversized_request_through_nginx_is_a_431_not_a_502(daemon, nginx, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--buffer-size", "4096", ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    r = requests.get(f"{n.url}/environ", cookies={"big": "v" * 6000})
    assert r.status_code == 431
    assert "exceeds --buffer-size 4096" in r.text


def test_peer_that_never_sends_its_head_is_timed_out(daemon, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--socket-timeout", "1",
               ready=app_sock)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(app_sock)
        s.sendall(b"\x00\x20")
        d.wait_log(r"no complete uwsgi request head after 1 s \(received 2 of the 4 bytes of the uwsgi header\)")
        assert s.recv(10) == b""  # closed by the daemon
    assert send_raw(app_sock, packet(request_vars("/pid"))).startswith(b"HTTP/1.1 200 OK")
