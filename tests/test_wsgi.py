"""Point 3 (PEP 3333) and point 6 (responses), over five transports: stock nginx
uwsgi_pass on a unix socket and on TCP, the daemon's own HTTP listener, and our nginx
module's wsgi_pass (to an address and through an upstream block)."""

import hashlib
import json
import os
import re

import pytest
import requests

from conftest import APPS, free_port, wait_for


@pytest.fixture(params=["nginx-unix", "nginx-tcp", "http", "wsgi_pass-unix", "wsgi_pass-upstream"])
def site(request, daemon, nginx, tmp_path):
    """Base URL of the pep3333 app, the daemon, and the close() log."""
    close_log = tmp_path / "closed.log"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    env = {"CLOSE_LOG": str(close_log), "BIG_FILE": str(big)}
    app = ["--wsgi-file", APPS / "pep3333.py", "--processes", "2"]
    if request.param == "nginx-unix":
        sock = str(tmp_path / "app.sock")
        d = daemon("--socket", sock, *app, env=env, ready=sock)
        url = nginx(f"unix:{sock}").url
    elif request.param == "nginx-tcp":
        port = free_port()
        d = daemon("--socket", f"127.0.0.1:{port}", *app, env=env, ready=("127.0.0.1", port))
        url = nginx(f"127.0.0.1:{port}").url
    elif request.param == "http":
        port = free_port()
        d = daemon("--http-socket", f"127.0.0.1:{port}", *app, env=env, ready=("127.0.0.1", port))
        url = f"http://127.0.0.1:{port}"
    else:
        # Our nginx module: to the address itself, or through an upstream block.
        sock = str(tmp_path / "app.sock")
        d = daemon("--socket", sock, *app, env=env, ready=sock)
        if request.param == "wsgi_pass-unix":
            url = nginx(f"unix:{sock}", module=True).url
        else:
            url = nginx("app", module=True, http_extra=f"upstream app {{ server unix:{sock}; }}").url
    return url, d, close_log, big


def test_environ_has_every_required_key_as_native_strings(site):
    url, _, _, _ = site
    env = requests.get(f"{url}/environ?a=1&b=%C3%A9", headers={"X-Custom": "v"}).json()
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
                "SERVER_PROTOCOL", "REMOTE_ADDR"):
        assert key in env, key
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is True and env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False and env["wsgi.input_terminated"] is True


def test_non_ascii_path_is_a_latin1_native_string(site):
    url, _, _, _ = site
    env = requests.get(f"{url}/environ/caf%C3%A9").json()
    # UTF-8 bytes of the decoded path, each as one latin-1 character (PEP 3333).
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9"


def test_body_read_with_content_length(site):
    url, _, _, _ = site
    assert requests.post(f"{url}/echo", data=b"hello body").content == b"hello body"


def test_large_body_is_streamed_to_the_app(site):
    url, _, _, _ = site
    body = os.urandom(8 * 1024 * 1024 + 3)
    got = requests.post(f"{url}/digest", data=body).json()
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}


def test_chunked_request_body(site):
    url, _, _, _ = site
    parts = [b"first ", b"second ", b"third"]
    got = requests.post(f"{url}/digest", data=iter(parts)).json()  # requests sends it chunked
    assert got == {"sha256": hashlib.sha256(b"".join(parts)).hexdigest(), "size": len(b"".join(parts))}


def test_readline_readlines_and_iteration(site):
    url, _, _, _ = site
    body = b"line one\nline two\nthree\nfour\n"
    assert requests.post(f"{url}/lines", data=body).json() == [
        "line one\n", "lin", "e two\n", ["three\n", "four\n"]]
    assert requests.post(f"{url}/iterate", data=body).json() == ["line one\n", "line two\n", "three\n", "four\n"]


def test_write_callable(site):
    url, _, _, _ = site
    assert requests.get(f"{url}/write").text == "written then returned"


def test_generator_body_without_length(site):
    url, _, _, _ = site
    r = requests.get(f"{url}/generator")
    assert r.text == "".join(f"chunk {i}\n" for i in range(5))


def test_empty_chunks_before_the_first_byte(site):
    url, _, _, _ = site
    assert requests.get(f"{url}/empty-first").text == "after empties"


def test_close_is_called(site):
    url, _, close_log, _ = site
    assert requests.get(f"{url}/close?tag=after-full-body").text == "ab"
    wait_for(lambda: close_log.exists() and "after-full-body" in close_log.read_text(), 5, "close()")


def test_exception_before_headers_is_a_500_with_traceback_in_log(site):
    url, d, _, _ = site
    r = requests.get(f"{url}/error")
    assert r.status_code == 500
    d.wait_log(r"GET /error => 500: the app raised an exception\nTraceback \(most recent call last\)")
    d.wait_log("RuntimeError: boom in the view")


def test_exception_after_headers_aborts_the_response(site):
    url, d, close_log, _ = site
    # The app declared 32000 bytes and raised after 16000: the client must see a
    # truncated response, never a short one that looks complete.
    # (Over HTTP the head may still be in hyper's write buffer: then the connection
    # closes with no response at all, which a client also cannot take for success.)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        requests.get(f"{url}/error-after-headers?tag=abort").content
    d.wait_log("response aborted: the app raised after the headers were sent")
    d.wait_log("RuntimeError: failure while streaming the body")
    wait_for(lambda: close_log.exists() and "abort" in close_log.read_text(), 5, "close() after abort")
    assert requests.get(f"{url}/pid").ok, "the worker keeps serving"


def test_exc_info_replaces_the_response_before_headers_are_sent(site):
    url, _, _, _ = site
    r = requests.get(f"{url}/excinfo")
    assert (r.status_code, r.text) == (500, "app error page")


def test_wsgi_errors_go_to_the_log(site):
    url, d, _, _ = site
    assert requests.get(f"{url}/errors").text == "logged"
    d.wait_log("wsgi.errors: a line for the server log")
    d.wait_log("wsgi.errors: second line")


def test_latin1_header_status_and_no_content(site):
    url, _, _, _ = site
    r = requests.get(f"{url}/latin1")
    assert r.raw.headers["X-Latin"].encode("latin-1") == b"caf\xe9"
    r = requests.get(f"{url}/created")
    assert (r.status_code, r.text) == (201, "made")
    r = requests.get(f"{url}/no-content")
    assert (r.status_code, r.content) == (204, b"")


def test_head_has_headers_and_no_body(site):
    url, _, _, _ = site
    r = requests.head(f"{url}/big?kib=64")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(64 * 1024)
    assert r.content == b""


def test_64k_response(site):
    url, _, _, _ = site
    assert requests.get(f"{url}/big?kib=64").content == b"x" * 65536


def test_file_wrapper_sends_the_file_from_its_position(site):
    url, _, _, big = site
    assert requests.get(f"{url}/raw/filewrapper").content == big.read_bytes()
    assert requests.get(f"{url}/raw/filewrapper?offset=1000").content == big.read_bytes()[1000:]


@pytest.mark.parametrize("path, message", [
    ("/raw/bad-status", 'status "OK" is not "NNN Reason"'),
    ("/raw/str-body", "the app yielded str where bytes are required"),
])
def test_invalid_responses_are_500s_that_say_why(site, path, message):
    url, d, _, _ = site
    assert requests.get(f"{url}{path}").status_code == 500
    d.wait_log(re.escape(message))


def test_http_keep_alive_reuses_the_connection(daemon):
    import http.client
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", ready=("127.0.0.1", port))
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/pid")
    first = conn.getresponse().read()
    sock = conn.sock
    for _ in range(5):
        conn.request("POST", "/echo", body=b"again")
        assert conn.getresponse().read() == b"again"
    assert conn.sock is sock, "the same TCP connection served every request"
    conn.request("GET", "/generator")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b"".join(f"chunk {i}\n".encode() for i in range(5))
    assert conn.sock is sock
    assert first.isdigit()
