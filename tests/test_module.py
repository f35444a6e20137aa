"""The nginx module: built against Debian's nginx, loaded by it, and wsgi_pass as a
uwsgi upstream handler, against our daemon and against real uWSGI.

(The PEP 3333 suite in test_wsgi.py also runs through wsgi_pass.)"""

import json
import os
import socket
import subprocess
import threading

import pytest
import requests

from conftest import APPS, MODULE, ROOT, VENV, can_connect, free_port, wait_for


def nginx_t(tmp_path, location, http_extra=""):
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
load_module {MODULE};
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
    {http_extra}
    server {{
        listen 127.0.0.1:1;
        location / {{
            {location}
        }}
    }}
}}
""")
    return subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)


def test_debians_nginx_loads_the_module(tmp_path):
    out = nginx_t(tmp_path, "wsgi_pass unix:/run/app.sock;")
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def test_wrong_arguments_are_nginx_style_errors_with_file_and_line(tmp_path):
    cases = [
        ("wsgi_pass unix:/a.sock;\n            wsgi_pass unix:/b.sock;", '"wsgi_pass" directive is duplicate', 12),
        ("wsgi_pass unix:/a.sock; wsgi_param X y bogus;",
         'invalid parameter "bogus" of "wsgi_param": expected "if_not_empty"', 11),
        ("wsgi_pass;", 'invalid number of arguments in "wsgi_pass" directive', 11),
    ]
    for location, message, line in cases:
        out = nginx_t(tmp_path, location)
        assert out.returncode == 1
        assert message in out.stderr, out.stderr
        assert f"in {tmp_path}/nginx.conf:{line}" in out.stderr, out.stderr


ALL_DIRECTIVES = """
            wsgi_pass unix:/run/app.sock;
            wsgi_param X_A b if_not_empty;
            wsgi_modifier1 0; wsgi_modifier2 0;
            wsgi_pass_request_headers on; wsgi_pass_request_body on;
            wsgi_connect_timeout 5s; wsgi_send_timeout 30s; wsgi_read_timeout 120s;
            wsgi_buffering on; wsgi_request_buffering on;
            wsgi_buffer_size 8k; wsgi_buffers 8 8k; wsgi_busy_buffers_size 16k;
            wsgi_max_temp_file_size 100m; wsgi_temp_file_write_size 16k; wsgi_temp_path /tmp/wsgi_temp 1 2;
            wsgi_next_upstream error timeout http_503; wsgi_next_upstream_tries 3; wsgi_next_upstream_timeout 10s;
            wsgi_intercept_errors off; wsgi_hide_header X-Secret; wsgi_pass_header Server;
            wsgi_ignore_headers X-Accel-Expires; wsgi_bind 127.0.0.1; wsgi_socket_keepalive on;
            wsgi_ignore_client_abort off; wsgi_limit_rate 0;
"""


def test_every_directive_of_the_uwsgi_family_is_accepted(tmp_path):
    out = nginx_t(tmp_path, ALL_DIRECTIVES)
    assert out.returncode == 0, out.stderr


def test_buffer_settings_are_checked_as_uwsgi_passs_are(tmp_path):
    out = nginx_t(tmp_path, "wsgi_pass unix:/a.sock; wsgi_buffers 1 4k;")
    assert out.returncode == 1 and 'there must be at least 2 "wsgi_buffers"' in out.stderr
    out = nginx_t(tmp_path, "wsgi_pass unix:/a.sock; wsgi_busy_buffers_size 1k;")
    assert out.returncode == 1 and '"wsgi_busy_buffers_size" must be equal to or greater than' in out.stderr
    out = nginx_t(tmp_path, "wsgi_pass unix:/a.sock; wsgi_modifier1 300;")
    assert out.returncode == 1 and '"wsgi_modifier1" must be from 0 to 255' in out.stderr


def start(daemon, nginx, tmp_path, http_extra="", location_extra="", app="pep3333.py"):
    sock = str(tmp_path / "app.sock")
    d = daemon("--socket", sock, "--wsgi-file", APPS / app, ready=sock)
    n = nginx(f"unix:{sock}", module=True, http_extra=http_extra, location_extra=location_extra)
    return d, n


def test_debians_uwsgi_params_are_sent_without_include(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path)
    env = requests.get(f"{n.url}/environ?q=1").json()
    for key in ("QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "REQUEST_URI", "PATH_INFO",
                "DOCUMENT_ROOT", "SERVER_PROTOCOL", "REQUEST_SCHEME", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_PORT",
                "SERVER_NAME"):
        assert key in env, key
    assert (env["QUERY_STRING"], env["REQUEST_URI"], env["REQUEST_SCHEME"]) == ("q=1", "/environ?q=1", "http")
    assert "HTTPS" not in env, "HTTPS is if_not_empty, as in uwsgi_params"


def test_wsgi_param_overrides_adds_and_skips_empty(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path, location_extra=(
        'wsgi_param SERVER_NAME override.example; wsgi_param X_APP_ENV "$request_method-$uri"; '
        'wsgi_param X_EMPTY "$http_x_absent" if_not_empty; wsgi_param HTTP_X_REAL "from-param"; '
        'wsgi_param X_BRACED ${request_method}; wsgi_param X_MISSING $http_x_nope; '
        'wsgi_param X_HEADER $http_x_real;'))
    env = requests.get(f"{n.url}/environ", headers={"X-Real": "from-client"}).json()
    assert env["SERVER_NAME"] == "override.example"
    assert env["X_APP_ENV"] == "GET-/environ"
    # A param that is one variable alone is read by its index: the same values.
    assert (env["X_BRACED"], env["X_MISSING"], env["X_HEADER"]) == ("GET", "", "from-client")
    assert "X_EMPTY" not in env
    assert env["HTTP_X_REAL"] == "from-param", "a param named HTTP_* replaces the client's header"


def test_an_inherited_http_param_replaces_the_clients_header(daemon, nginx, tmp_path):
    """A wsgi_param HTTP_* set in http{} replaces the header in a location that has no
    params of its own, as one set in the location does (above)."""
    _, n = start(daemon, nginx, tmp_path, http_extra='wsgi_param HTTP_X_REAL "from-http";')
    env = requests.get(f"{n.url}/environ", headers={"X-Real": "from-client"}).json()
    assert env["HTTP_X_REAL"] == "from-http"


def test_repeated_headers_are_joined_as_nginx_joins_them(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path)
    raw = (b"GET /environ HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nX-Many: one\r\n"
           b"X-Many: two\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", n.port)) as s:
        s.sendall(raw)
        data = b"".join(iter(lambda: s.recv(65536), b""))
    env = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_MANY"] == "one, two"


def test_vars_over_64k_are_refused_with_a_log_line(daemon, nginx, tmp_path):
    d, n = start(daemon, nginx, tmp_path, http_extra="large_client_header_buffers 8 64k;")
    headers = {f"X-Big-{i}": "v" * 9000 for i in range(8)}
    assert requests.get(f"{n.url}/environ", headers=headers).status_code == 500
    wait_for(lambda: "wsgi request not sent: uwsgi request vars are" in n.error_log(), 5, "the error log line")
    assert "over the protocol's 65535-byte limit" in n.error_log()
    assert requests.get(f"{n.url}/pid").ok


def test_dead_backend_is_a_quick_502_naming_the_address(nginx, tmp_path):
    n = nginx(f"unix:{tmp_path}/nobody.sock", module=True)
    r = requests.get(f"{n.url}/", timeout=5)
    assert r.status_code == 502
    assert f"connect() to unix:{tmp_path}/nobody.sock failed" in n.error_log()


def test_one_dead_server_in_an_upstream_block_loses_no_request(daemon, nginx, tmp_path):
    sock = str(tmp_path / "app.sock")
    daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", ready=sock)
    upstream = f"upstream app {{ server unix:{tmp_path}/dead.sock; server unix:{sock}; }}"
    n = nginx("app", module=True, http_extra=upstream)
    assert all(requests.get(f"{n.url}/pid").ok for _ in range(20))





def test_upstream_keepalive_reuses_connections_to_the_daemon(daemon, nginx, tmp_path):
    """Point 6: with `keepalive` in the upstream block, the daemon accepts far fewer
    connections than it serves requests."""
    sock = str(tmp_path / "app.sock")
    d = daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", env={"NGX_WSGI_LOG": "debug"}, ready=sock)
    n = nginx("app", module=True, http_extra=f"upstream app {{ server unix:{sock}; keepalive 4; }}")
    s = requests.Session()
    for i in range(30):
        assert s.get(f"{n.url}/pid").text.isdigit()
        assert s.post(f"{n.url}/echo", data=b"x" * (i * 1000)).content == b"x" * (i * 1000)
        r = s.head(f"{n.url}/big")
        assert (r.status_code, r.headers["Content-Length"]) == (200, "65536")
        # No length: the daemon sends it chunked, the module decodes it.
        assert s.get(f"{n.url}/generator").text == "".join(f"chunk {i}\n" for i in range(5))
    wait_for(lambda: d.log().count(" => ") >= 120, 5, "every request in the log")
    accepted = d.log().count("connection accepted")
    assert 1 <= accepted <= 4, f"{accepted} connections for 120 requests"
    assert "[error]" not in n.error_log() and "[alert]" not in n.error_log()


def test_real_uwsgi_behind_wsgi_pass(nginx, tmp_path):
    """Code nobody here wrote on the other side: uWSGI (pyuwsgi) with a Flask app, behind
    an upstream block with keepalive: uWSGI ignores the reuse request and closes after
    each response, and every request still works."""
    sock = str(tmp_path / "uwsgi.sock")
    proc = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--socket", sock, "--wsgi-file",
                             str(APPS / "flaskapp" / "app.py"), "--callable", "app", "--home", str(VENV),
                             "--disable-logging"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: can_connect(sock), 15, "uWSGI")
        n = nginx("app", module=True, http_extra=f"upstream app {{ server unix:{sock}; keepalive 4; }}")
        s = requests.Session()
        assert [s.get(f"{n.url}/").json()["visits"] for _ in range(3)] == [1, 2, 3]
        assert s.post(f"{n.url}/form", data={"name": "Zoë", "tag": ["a"]}).json() == {"name": "Zoë", "tags": ["a"]}
        payload = os.urandom(3 * 1024 * 1024)
        r = s.post(f"{n.url}/upload", files={"file": ("f.bin", payload)})
        assert r.json()["size"] == len(payload)
        assert s.get(f"{n.url}/missing").status_code == 404
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_install_lays_out_debian_style_files(tmp_path):
    make = ["make", "-s", "-C", str(ROOT)]
    # install builds, with the build's packages only: no test tools, no touching nginx.
    planned = subprocess.run(make[:1] + ["-n", "-C", str(ROOT), "install"], capture_output=True, text=True).stdout
    assert "setup.sh build" in planned and "setup.sh test" not in planned and "systemctl" not in planned
    subprocess.run(make + ["install", f"DESTDIR={tmp_path}"], check=True, capture_output=True)
    assert (tmp_path / "usr/lib/nginx/modules/ngx_http_wsgi_module.so").is_file()
    snippet = tmp_path / "usr/share/nginx/modules-available/mod-http-wsgi.conf"
    assert snippet.read_text().strip() == "load_module modules/ngx_http_wsgi_module.so;"
    enabled = tmp_path / "etc/nginx/modules-enabled/50-mod-http-wsgi.conf"
    assert os.readlink(enabled) == "/usr/share/nginx/modules-available/mod-http-wsgi.conf"
    assert os.access(tmp_path / "usr/local/bin/ngx-wsgi", os.X_OK)
    unit = (tmp_path / "etc/systemd/system/ngx-wsgi@.service").read_text()
    assert "ExecStart=/usr/local/bin/ngx-wsgi /etc/ngx-wsgi/%i.ini" in unit
    # The example config is installed, and a user's edit of it is never overwritten.
    example = tmp_path / "etc/ngx-wsgi/mysite.ini"
    assert "[uwsgi]" in example.read_text()
    example.write_text("[uwsgi]\n; edited\n")
    # Another prefix: the unit follows it.
    subprocess.run(make + ["install", f"DESTDIR={tmp_path}", "PREFIX=/opt/ngx-wsgi"], check=True,
                   capture_output=True)
    assert example.read_text() == "[uwsgi]\n; edited\n"
    unit = (tmp_path / "etc/systemd/system/ngx-wsgi@.service").read_text()
    assert "ExecStart=/opt/ngx-wsgi/bin/ngx-wsgi /etc/ngx-wsgi/%i.ini" in unit
    assert "/usr/local/bin" not in unit
    # systemd reads both units as written (the binary named where DESTDIR put it).
    units = tmp_path / "verify"
    units.mkdir()
    (units / "ngx-wsgi@mysite.service").write_text(unit.replace("/opt/ngx-wsgi", f"{tmp_path}/opt/ngx-wsgi"))
    socket_unit = (tmp_path / "etc/systemd/system/ngx-wsgi@.socket").read_text()
    (units / "ngx-wsgi@mysite.socket").write_text(socket_unit)
    verify = subprocess.run(["systemd-analyze", "verify", units / "ngx-wsgi@mysite.service",
                             units / "ngx-wsgi@mysite.socket"], capture_output=True, text=True, cwd=units)
    assert (verify.returncode, verify.stderr) == (0, "")
    assert "Type=notify" in unit and "NoNewPrivileges=yes" in unit
    # The socket unit listens where the example config's socket is.
    assert "ListenStream=/run/ngx-wsgi/%i.sock" in socket_unit
    assert "socket = /run/ngx-wsgi/%(project).sock" in (ROOT / "nginx-conf/mysite.ini").read_text()
    subprocess.run(make + ["uninstall", f"DESTDIR={tmp_path}", "PREFIX=/opt/ngx-wsgi"], check=True,
                   capture_output=True)
    for gone in ("opt/ngx-wsgi/bin/ngx-wsgi", "usr/lib/nginx/modules/ngx_http_wsgi_module.so",
                 "etc/nginx/modules-enabled/50-mod-http-wsgi.conf", "etc/systemd/system/ngx-wsgi@.service",
                 "etc/systemd/system/ngx-wsgi@.socket", "etc/logrotate.d/ngx-wsgi",
                 "usr/share/nginx/modules-available/mod-http-wsgi.conf"):
        assert not os.path.lexists(tmp_path / gone), gone
    assert example.exists(), "the user's config stays"


def test_read_timeout_is_a_504(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path, location_extra="wsgi_read_timeout 500ms;")
    r = requests.get(f"{n.url}/sleep?seconds=2")
    assert r.status_code == 504
    assert "upstream timed out" in n.error_log()


def test_hide_header_and_pass_request_headers(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path, location_extra="wsgi_hide_header X-Latin; wsgi_pass_request_headers off;")
    assert "X-Latin" not in requests.get(f"{n.url}/latin1").headers
    env = requests.get(f"{n.url}/environ", headers={"X-Custom": "v"}).json()
    assert not [k for k in env if k.startswith("HTTP_")]


def test_modifier1_reaches_the_backend(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path, location_extra="wsgi_modifier1 5;")
    r = requests.get(f"{n.url}/pid")
    assert r.status_code == 400
    assert "uwsgi modifier1 5 is not a WSGI request" in r.text


def test_intercept_errors(daemon, nginx, tmp_path):
    _, n = start(daemon, nginx, tmp_path, location_extra="wsgi_intercept_errors on; error_page 404 =200 /pid;")
    r = requests.get(f"{n.url}/no-such-page")
    assert r.status_code == 200 and r.text.isdigit()


def test_unbuffered_responses_stream_and_reuse_connections(daemon, nginx, tmp_path):
    sock = str(tmp_path / "app.sock")
    d = daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", env={"NGX_WSGI_LOG": "debug"}, ready=sock)
    n = nginx("app", module=True, location_extra="wsgi_buffering off;",
              http_extra=f"upstream app {{ server unix:{sock}; keepalive 4; }}")
    s = requests.Session()
    for _ in range(10):
        assert s.get(f"{n.url}/big?kib=100").content == b"x" * 102400
        assert s.get(f"{n.url}/pid").text.isdigit()
        assert s.get(f"{n.url}/generator").text == "".join(f"chunk {i}\n" for i in range(5))
    wait_for(lambda: d.log().count(" => ") >= 30, 5, "every request in the log")
    assert d.log().count("connection accepted") <= 4


def test_gunicorn_uwsgi_protocol_behind_wsgi_pass(nginx, tmp_path):
    """The other peer the issue names: gunicorn --protocol uwsgi, one request per connection."""
    sock = str(tmp_path / "gunicorn.sock")
    proc = subprocess.Popen([str(VENV / "bin" / "gunicorn"), "--protocol", "uwsgi", "--bind", f"unix:{sock}",
                             "--workers", "2", "--chdir", str(APPS / "flaskapp"), "app:app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: can_connect(sock), 20, "gunicorn")
        n = nginx("app", module=True, http_extra=f"upstream app {{ server unix:{sock}; keepalive 4; }}")
        s = requests.Session()
        assert [s.get(f"{n.url}/").json()["visits"] for _ in range(3)] == [1, 2, 3]
        assert s.post(f"{n.url}/form", data={"name": "Zoë", "tag": ["a", "b"]}).json() == {
            "name": "Zoë", "tags": ["a", "b"]}
        payload = os.urandom(2 * 1024 * 1024)
        assert s.post(f"{n.url}/upload", files={"file": ("f.bin", payload)}).json()["size"] == len(payload)
        r = s.get(f"{n.url}/go", allow_redirects=False)
        assert r.status_code == 302
        assert s.get(f"{n.url}/missing").status_code == 404
        assert "[error]" not in n.error_log() and "[alert]" not in n.error_log()
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_wsgi_pass_with_variables(daemon, nginx, tmp_path):
    """An address in a variable, and an upstream block's name from a map."""
    sock = str(tmp_path / "app.sock")
    daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", ready=sock)
    n = nginx("$backend", module=True, location_extra=f"set $backend unix:{sock};")
    assert requests.get(f"{n.url}/pid").text.isdigit()
    n = nginx("$pool", module=True, http_extra=(
        f"upstream app {{ server unix:{sock}; keepalive 2; }} map $http_x_pool $pool {{ default app; }}"))
    assert requests.get(f"{n.url}/environ").json()["REQUEST_METHOD"] == "GET"
    n = nginx("$backend", module=True, location_extra='set $backend "127.0.0.1:notaport";')
    assert requests.get(f"{n.url}/pid").status_code == 500
    wait_for(lambda: 'in wsgi_pass "127.0.0.1:notaport"' in n.error_log(), 5, "the error log line")








def test_request_buffering_off_streams_the_body(daemon, nginx, tmp_path):
    import hashlib
    _, n = start(daemon, nginx, tmp_path, location_extra="wsgi_request_buffering off;")
    body = os.urandom(3 * 1024 * 1024)
    got = requests.post(f"{n.url}/digest", data=body).json()
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    # A chunked client body is read whole first (its length must be known): still works.
    got = requests.post(f"{n.url}/digest", data=iter([b"a" * 1000, b"b" * 1000])).json()
    assert got["size"] == 2000


def raw_backend(tmp_path, name, respond, connections=1):
    """A backend that is not a WSGI server: it reads each request and lets `respond` answer,
    for backends that misbehave, or that do what WSGI cannot (upgrades). Returns its socket."""
    path = str(tmp_path / f"{name}.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()

    def serve():
        with server:
            for _ in range(connections):
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    respond(conn)

    threading.Thread(target=serve, daemon=True).start()
    return path


def test_truncated_response_is_a_502_with_a_log_line(nginx, tmp_path):
    """A backend that closes in the middle of its response head."""
    sock = raw_backend(tmp_path, "broken", lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty"), 2)
    n = nginx(f"unix:{sock}", module=True)
    assert requests.get(f"{n.url}/").status_code == 502
    assert "upstream prematurely closed connection while reading response header" in n.error_log()


def test_websocket_upgrade_is_tunnelled(nginx, tmp_path):
    """101 + Upgrade: nginx tunnels the connection both ways, as with uwsgi_pass. WSGI apps
    cannot upgrade, so the backend answers 101 and then echoes what it receives."""

    def upgrade_and_echo(conn):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while data := conn.recv(65536):
            conn.sendall(b"echo:" + data)

    n = nginx(f"unix:{raw_backend(tmp_path, 'ws', upgrade_and_echo)}", module=True)
    with socket.create_connection(("127.0.0.1", n.port), timeout=5) as client:
        client.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
        assert b"upgrade: websocket" in head.lower()
        client.sendall(b"hello over the tunnel")
        assert client.recv(4096) == b"echo:hello over the tunnel"


def test_invalid_chunked_response_is_logged_and_cut(nginx, tmp_path):
    bad_chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n"
    n = nginx(f"unix:{raw_backend(tmp_path, 'chunks', lambda conn: conn.sendall(bad_chunks))}", module=True)
    # The client gets a 502, a response cut short, or (the head not flushed yet, as
    # nginx's proxy module does too) a closed connection: never one that looks complete.
    try:
        status = requests.get(f"{n.url}/").status_code
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        status = "cut short"
    assert status in (502, "cut short")
    wait_for(lambda: "upstream sent an invalid chunked response" in n.error_log(), 5, "the error log line")


@pytest.mark.parametrize("buffering", ["on", "off"])
@pytest.mark.parametrize("response, logged", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", "upstream sent more data than its Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nEXTRA",
     "upstream sent data after the final chunk"),
], ids=["content-length", "chunked"])
def test_bytes_past_the_end_of_a_response_are_dropped_and_logged(nginx, tmp_path, buffering, response, logged):
    """A backend that sends more than its response said: the client gets the response as
    it was announced, nginx's error log says what happened (buffered and unbuffered)."""
    sock = raw_backend(tmp_path, "long", lambda conn: conn.sendall(response))
    n = nginx(f"unix:{sock}", module=True, location_extra=f"wsgi_buffering {buffering};")
    # Read raw, to the close: an HTTP client would stop at the announced end.
    port = int(n.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), answer
    chunked = b"transfer-encoding: chunked" in head.lower()
    assert body == (b"5\r\nhello\r\n0\r\n\r\n" if chunked else b"hello"), answer
    wait_for(lambda: logged in n.error_log(), 5, "the error log line")


def test_cgi_style_status_header(nginx, tmp_path):
    """A response without a status line but with a CGI `Status:` header, as some uwsgi
    servers send."""
    cgi = b"Status: 404 Not Here\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ngone"
    n = nginx(f"unix:{raw_backend(tmp_path, 'cgi', lambda conn: conn.sendall(cgi), 2)}", module=True)
    r = requests.get(f"{n.url}/")
    assert (r.status_code, r.reason, r.text) == (404, "Not Here", "gone")
