"""`wsgi_app FILE;`: nginx reads the daemon's own config file, passes requests to the socket
it declares (reusing connections), and `nginx -t` fails, naming the nginx.conf line and the
config file's line, when the two sides disagree in a way that breaks requests."""

import pathlib
import re
import signal
import subprocess

import pytest
import requests

from conftest import APPS, wait_for, write_nginx_conf

def nginx_t(tmp_path, app, extra="", user="root"):
    """Runs `nginx -t` on a configuration with `wsgi_app app;`: (exit code, output, where the
    directive is as nginx names it)."""
    prefix = tmp_path / "nginx-t"
    prefix.mkdir(exist_ok=True)
    conf = write_nginx_conf(prefix, 8, f"wsgi_app {app};", location_extra=extra, module=True, user=user)
    line = next(i for i, text in enumerate(conf.read_text().splitlines(), 1) if "wsgi_app" in text)
    out = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True,
                         timeout=20)
    return out.returncode, out.stderr, f"in {conf}:{line}"


def write_ini(tmp_path, body, name="app.ini"):
    path = tmp_path / name
    path.write_text("[uwsgi]\n" + body)
    return path


def test_one_config_file_serves_through_nginx_with_connection_reuse(daemon, nginx, tmp_path):
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\nprocesses = 2\n"
                              "harakiri = 30\nlimit-post = 1m\nchmod-socket = 660\n")
    d = daemon(ini, env={"NGX_WSGI_LOG": "debug"}, ready=str(sock))
    n = nginx(None, module=True, directives=f"wsgi_app {ini};",
              location_extra="wsgi_read_timeout 60s; client_max_body_size 1m;")
    s = requests.Session()
    for i in range(25):
        assert s.get(f"{n.url}/pid").text.isdigit()
        assert s.post(f"{n.url}/echo", data=b"x" * (i * 1000)).content == b"x" * (i * 1000)
    wait_for(lambda: d.log().count(" => ") >= 50, 5, "every request in the log")
    accepted = d.log().count("connection accepted")
    assert 1 <= accepted <= 4, f"{accepted} connections for 50 requests"
    # nginx itself refuses what the daemon would (client_max_body_size agrees with limit-post).
    assert s.post(f"{n.url}/echo", data=b"x" * (2 << 20)).status_code == 413


def test_invalid_config_fails_nginx_t_with_both_lines(tmp_path):
    ini = write_ini(tmp_path, "sokcet = /run/app.sock\nmodule = app\nprocesses = -1\nemperor = /etc/vassals\n")
    code, out, where = nginx_t(tmp_path, ini)
    assert code == 1
    assert f'wsgi_app: {ini}:2: unknown option "sokcet", did you mean "socket"? {where}' in out
    assert (f'wsgi_app: {ini}:4: invalid value "-1" for option "processes": '
            f"expected a whole number of at least 1 {where}") in out
    assert f'wsgi_app: {ini}:5: option "emperor" is a uWSGI option ngx-wsgi does not provide: run one ngx-wsgi per app as a systemd unit: systemctl enable --now ngx-wsgi@NAME (nginx-conf/ngx-wsgi@.service reads /etc/ngx-wsgi/NAME.ini) {where}' in out
    assert f"wsgi_app: {ini}: nowhere to listen: set socket, http-socket or http {where}" in out
    assert "test failed" in out


def test_missing_file_and_no_uwsgi_socket(tmp_path):
    code, out, where = nginx_t(tmp_path, tmp_path / "nope.ini")
    assert code == 1
    assert f"wsgi_app: cannot read config file: {tmp_path}/nope.ini: No such file or directory (os error 2) {where}" in out
    ini = write_ini(tmp_path, "http-socket = :8000\nmodule = app\n")
    code, out, where = nginx_t(tmp_path, ini)
    assert code == 1
    assert (f"wsgi_app {ini}: the config has no uwsgi socket for nginx to pass requests to: add one, "
            f"such as socket = /run/ngx-wsgi/app.sock {where}") in out
    ini = write_ini(tmp_path, "socket = @app\nmodule = app\n", "abstract.ini")
    code, out, where = nginx_t(tmp_path, ini)
    assert code == 1
    assert f"wsgi_app {ini}: socket = @app is an abstract unix socket, which nginx cannot connect to" in out
    assert f"({ini}:2) {where}" in out


def test_timeouts_and_body_limits_that_break_requests_fail_nginx_t(tmp_path):
    ini = write_ini(tmp_path, "socket = /run/app.sock\nmodule = app\nharakiri = 30\nlimit-post = 10m\n")
    code, out, where = nginx_t(tmp_path, ini, extra="wsgi_read_timeout 20s; client_max_body_size 64m;")
    assert code == 1
    assert (f"wsgi_app {ini}: wsgi_read_timeout 20s is not longer than harakiri = 30 s: nginx answers 504 "
            "and drops the request while the daemon still runs it; set wsgi_read_timeout 35s or more, "
            f"or lower harakiri ({ini}:4) {where}") in out
    assert (f"wsgi_app {ini}: client_max_body_size is 67108864 bytes, above limit-post = 10485760 bytes: "
            "nginx would take bodies the daemon refuses; set client_max_body_size 10485760 or less "
            f"({ini}:5) {where}") in out
    # The same config with agreeing nginx settings passes.
    code, out, _ = nginx_t(tmp_path, ini, extra="wsgi_read_timeout 35s; client_max_body_size 10m;")
    assert code == 0, out


def test_socket_permissions_nginx_workers_cannot_use_fail_nginx_t(tmp_path):
    ini = write_ini(tmp_path, "socket = /run/app.sock\nmodule = app\nchmod-socket = 660\n"
                              "chown-socket = root:root\n")
    code, out, where = nginx_t(tmp_path, ini, user="www-data")
    assert code == 1
    assert re.search(r"wsgi_app .*: nginx's workers run as www-data and cannot connect to /run/app.sock: "
                     r"mode 660 lets only the socket's owner and group connect", out), out
    assert f"({ini}:4) {where}" in out
    # The group nginx's user is in: allowed.
    ini = write_ini(tmp_path, "socket = /run/app.sock\nmodule = app\nchmod-socket = 660\n"
                              "chown-socket = root:www-data\n", "group.ini")
    code, out, _ = nginx_t(tmp_path, ini, user="www-data")
    assert code == 0, out
    assert "cannot connect" not in out and "may not" not in out


def test_mismatches_that_might_matter_are_warnings(tmp_path):
    ini = write_ini(tmp_path, "socket = /run/app.sock\nmodule = app\nbuffer-size = 4096\n"
                              "processes = 2 # workers\n")
    code, out, where = nginx_t(tmp_path, ini, user="www-data")
    assert code == 0, out
    assert re.search(rf"\[warn\].*wsgi_app {ini}: buffer-size = 4096 is smaller than the request heads nginx "
                     rf"accepts \(32768 bytes, large_client_header_buffers\).*\({ini}:4\) {where}", out), out
    assert re.search(rf"\[warn\].*wsgi_app {ini}: nginx's workers run as www-data and may not be able to "
                     r"connect to /run/app.sock: without chmod-socket", out), out
    assert re.search(rf'\[warn\].*wsgi_app: {ini}:5: "# workers" after the value of processes is read as a '
                     r"comment", out), out


def test_reload_rereads_the_config_and_keeps_the_old_one_when_it_breaks(daemon, nginx, tmp_path):
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\n")
    daemon(ini, ready=str(sock))
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")
    assert requests.get(f"{n.url}/pid").ok
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nwsgi-file = {APPS}/pep3333.py\nharakiri = 600\n")
    # `nginx -s reload` reads the configuration before signalling: the error is on its stderr.
    out = reload(n)
    assert out.returncode == 1
    assert f"is not longer than harakiri = 600 s: nginx answers 504" in out.stderr
    assert requests.get(f"{n.url}/pid").ok  # the old configuration still serves
    # The master re-reads it on its own too, and keeps the old configuration.
    n.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "is not longer than harakiri = 600 s" in n.error_log(), 10, "the reload's error")
    assert requests.get(f"{n.url}/pid").ok
    # Fixed: the next reload takes it.
    second = tmp_path / "second.sock"
    daemon(write_ini(tmp_path, f"socket = {second}\nwsgi-file = {APPS}/pep3333.py\nenv = WHICH=second\n",
                     "second.ini"), ready=str(second))
    ini.write_text(f"[uwsgi]\nsocket = {second}\nwsgi-file = {APPS}/pep3333.py\n")
    assert reload(n).returncode == 0
    wait_for(lambda: requests.get(f"{n.url}/osenv?name=WHICH").text == "second", 15, "the new socket")


def reload(n):
    """`nginx -s reload` for a test's nginx."""
    return subprocess.run(["nginx", "-p", str(n.prefix), "-c", str(n.prefix / "nginx.conf"), "-s", "reload"],
                          capture_output=True, text=True, timeout=20)


def test_the_shipped_deployment_files_agree(tmp_path):
    """nginx-conf/mysite.ini and the site's location pass both checks with no warning."""
    from conftest import ROOT, BIN
    ini = ROOT / "nginx-conf" / "mysite.ini"
    out = subprocess.run([BIN, "--check-config", ini], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert 'socket = ["/run/ngx-wsgi/mysite.sock"]' in out.stdout
    assert 'env = ["DJANGO_SETTINGS_MODULE=mysite.settings"]' in out.stdout
    site = (ROOT / "nginx-conf" / "ngx-wsgi-site.conf").read_text()
    location = re.search(r"location / \{\n(.*?)\n    \}", site, re.S).group(1)
    extra = location.replace("wsgi_app /etc/ngx-wsgi/mysite.ini;", "")
    code, out, _ = nginx_t(tmp_path, ini, extra=extra, user="www-data")
    assert code == 0, out
    assert "[warn]" not in out, out


def test_a_tcp_socket_on_every_interface_and_two_locations_sharing_it(daemon, nginx, tmp_path):
    from conftest import free_port
    port = free_port()
    ini = write_ini(tmp_path, f"socket = :{port}\nwsgi-file = {APPS}/pep3333.py\n")
    d = daemon(ini, env={"NGX_WSGI_LOG": "debug"}, ready=("127.0.0.1", port))
    n = nginx(None, module=True, directives=f"wsgi_app {ini};",
              location_extra=f"location /api/ {{ wsgi_app {ini}; }}")
    s = requests.Session()
    for _ in range(10):
        assert s.get(f"{n.url}/pid").text.isdigit()
        assert s.get(f"{n.url}/api/x").status_code == 404  # the app's own 404, through the other location
    wait_for(lambda: d.log().count(" => ") >= 20, 5, "every request in the log")
    # One implicit upstream for both locations, with one keepalive cache.
    assert 1 <= d.log().count("connection accepted") <= 4, d.log().count("connection accepted")


def test_keepalive_parameter_chooses_how_many_connections_are_kept(daemon, nginx, tmp_path):
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\n")
    d = daemon(ini, env={"NGX_WSGI_LOG": "debug"}, ready=str(sock))
    n = nginx(None, module=True, directives=f"wsgi_app {ini} keepalive=off;")
    for _ in range(10):
        assert requests.get(f"{n.url}/pid").ok
    wait_for(lambda: d.log().count(" => ") >= 10, 5, "every request in the log")
    # One connection per request, as uwsgi_pass (plus the test's own readiness probe).
    assert d.log().count("connection accepted") >= 10
    code, out, where = nginx_t(tmp_path, ini, extra="")
    assert code == 0, out
    prefix = tmp_path / "nginx-t"
    conf = (prefix / "nginx.conf").read_text().replace(f"wsgi_app {ini};", f"wsgi_app {ini} keepalive=lots;")
    (prefix / "nginx.conf").write_text(conf)
    out = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1
    assert ('invalid parameter "keepalive=lots" of "wsgi_app": expected keepalive=N (idle connections kept '
            f"per worker) or keepalive=off {where}") in out.stderr


def test_the_default_pool_keeps_every_connection_a_busy_site_uses(daemon, nginx, tmp_path):
    """With wsgi_app's default, 48 requests in flight at once (more than the 32 the pool
    used to hold), three times over, use the same 48 connections: none is closed after
    its request and made again for the next round (connection churn)."""
    import concurrent.futures
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\nprocesses = 2\nthreads = 24\n")
    d = daemon(ini, env={"NGX_WSGI_LOG": "debug"}, ready=str(sock))
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        for _ in range(3):
            answers = list(pool.map(lambda _: requests.get(f"{n.url}/sleep?seconds=0.4", timeout=20), range(48)))
            assert [a.status_code for a in answers] == [200] * 48
    wait_for(lambda: d.log().count(" => ") >= 144, 5, "every request in the log")
    accepted = d.log().count("connection accepted")
    # 48, and the test's readiness probe.
    assert 48 <= accepted <= 50, f"{accepted} connections for 3 rounds of 48 concurrent requests"


def whole_nginx_conf(locations, workers=1, listen=""):
    """A whole nginx.conf (for the fixture's `conf_text`) with `workers` nginx workers and
    one server (its `listen` with these parameters: with several workers, `reuseport`
    spreads the connections among them), holding `locations`, plain nginx text."""
    escaped = locations.replace("{", "{{").replace("}", "}}")  # the fixture's format()
    return ("{load_module}\nuser root;\nworker_processes %d;\npid {prefix}/nginx.pid;\n"
            "error_log {prefix}/error.log info;\nevents {{ worker_connections 1024; }}\n"
            "http {{ access_log off; server {{ listen 127.0.0.1:{port} %s; %s }} }}\n"
            % (workers, listen, escaped))


def location_stripped(prefix, directives):
    """A location for `prefix`/ that passes its requests on without the prefix."""
    return f"location {prefix}/ {{ rewrite ^{prefix}(/.*)$ $1 break; {directives} }}"


def test_a_large_page_for_a_slow_client_stays_in_memory_unless_the_user_chose_the_buffers(daemon, nginx,
                                                                                           tmp_path):
    """wsgi_app reads responses into 8 buffers of 16 KiB (wsgi_pass keeps uwsgi_pass's 8
    of 4 KiB): a 120 KiB page for a client that does not read yet stays in nginx's memory,
    where with 4 KiB buffers nginx writes it to a temporary file (its error log says so);
    `wsgi_buffers`, in the location or one enclosing it, is kept. Every page arrives whole."""
    import socket
    import time
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\n")
    daemon(ini, ready=str(sock))
    # nginx's send buffer small, so what the client does not read waits in nginx's buffers.
    n = nginx(None, module=True, conf_text=whole_nginx_conf(listen="sndbuf=8k", locations=" ".join([
        location_stripped("/pass", f"wsgi_pass unix:{sock};"),
        location_stripped("/app", f"wsgi_app {ini};"),
        location_stripped("/chosen", f"wsgi_app {ini}; wsgi_buffers 8 4k;"),
        "location /inherited/ { wsgi_buffers 8 4k; location /inherited/big {"
        f" rewrite ^/inherited(/.*)$ $1 break; wsgi_app {ini}; }} }}",
    ])))

    def slow_get(prefix):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", n.port))
        client.sendall(f"GET {prefix}/big?kib=120 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        time.sleep(1)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        client.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == b"x" * (120 * 1024), f"{prefix}: {len(body)} bytes of 122880"
        return [line for line in n.error_log().splitlines()
                if "buffered to a temporary file" in line and f"GET {prefix}/big" in line]

    assert slow_get("/pass"), "wsgi_pass's 8 x 4 KiB buffers: the page went to a temporary file"
    assert slow_get("/app") == [], n.error_log()
    assert slow_get("/chosen"), "the location's own wsgi_buffers 8 4k were kept"
    assert slow_get("/inherited"), "the enclosing location's wsgi_buffers 8 4k were kept"


def test_a_response_head_of_10_kib_passes_unless_the_user_chose_a_smaller_buffer(daemon, nginx, tmp_path):
    """An app whose response head is 10 KiB (ten cookies of 1 KiB): wsgi_app reads the head
    into a buffer of 16 KiB, as its other buffers, and the page is served with every
    cookie. With uwsgi_pass's default, a memory page (`wsgi_pass` keeps it), nginx answers
    502 and logs "upstream sent too big header"; as it does when the user chose
    `wsgi_buffer_size 4k`, or `wsgi_buffers` of their own (the head buffer is then nginx's
    page), in the location or one enclosing it, the `http` block included."""
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\n")
    daemon(ini, ready=str(sock))
    n = nginx(None, module=True, conf_text=whole_nginx_conf(" ".join([
        location_stripped("/pass", f"wsgi_pass unix:{sock};"),
        location_stripped("/app", f"wsgi_app {ini};"),
        location_stripped("/chosen", f"wsgi_app {ini}; wsgi_buffer_size 4k;"),
        location_stripped("/buffers", f"wsgi_app {ini}; wsgi_buffers 8 4k;"),
        "location /inherited/ { wsgi_buffer_size 4k; location /inherited/cookies {"
        f" rewrite ^/inherited(/.*)$ $1 break; wsgi_app {ini}; }} }}",
    ])))
    served = requests.get(f"{n.url}/app/cookies?kib=10", timeout=10)
    assert served.status_code == 200 and served.text == "ok"
    assert sorted(served.cookies.keys()) == sorted(f"c{i}" for i in range(10))
    assert "too big header" not in n.error_log()
    for prefix in ["/pass", "/chosen", "/buffers", "/inherited"]:
        assert requests.get(f"{n.url}{prefix}/cookies?kib=10", timeout=10).status_code == 502, prefix
        assert n.error_log().count("upstream sent too big header") == 1, n.error_log()
        (n.prefix / "error.log").write_text("")
    # In the http block, which nginx never merges (it is only ever the enclosing level).
    for chosen in ["wsgi_buffer_size 4k;", "wsgi_buffers 8 4k;"]:
        m = nginx(None, module=True, directives=f"wsgi_app {ini};", http_extra=chosen)
        assert requests.get(f"{m.url}/cookies?kib=10", timeout=10).status_code == 502, chosen
        assert "upstream sent too big header" in m.error_log(), chosen


def test_sizes_set_for_page_sized_buffers_keep_them_with_wsgi_app(tmp_path):
    """A location that sets a size nginx checks against the buffers, below wsgi_app's 16
    KiB and valid with uwsgi_pass's page-sized ones, keeps the page-sized ones: `nginx -t`
    passes, as it did before wsgi_app chose its own; one set too small for any buffers still
    fails, naming the directive."""
    ini = write_ini(tmp_path, f"socket = {tmp_path / 'app.sock'}\nwsgi-file = {APPS}/pep3333.py\n")
    for extra in ["wsgi_busy_buffers_size 8k;", "wsgi_temp_file_write_size 8k;", "wsgi_max_temp_file_size 8k;",
                  "wsgi_max_temp_file_size 0;"]:
        code, out, _ = nginx_t(tmp_path, ini, extra=extra)
        assert code == 0, f"{extra}: {out}"
    code, out, _ = nginx_t(tmp_path, ini, extra="wsgi_busy_buffers_size 1k;")
    assert code == 1
    assert '"wsgi_busy_buffers_size" must be equal to or greater than the maximum of the value of' in out


def busy_daemon(daemon, tmp_path):
    """A daemon with one worker and one thread: nginx sends it at most 1 x (1 + 2) requests
    at a time (queue.rs)."""
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\nprocesses = 1\n")
    return daemon(ini, env={"NGX_WSGI_LOG": "debug"}, ready=str(sock)), ini


def test_requests_beyond_what_the_daemon_can_start_wait_in_nginx(daemon, nginx, tmp_path):
    """Ten requests at once to a daemon with one thread: all answered, and the daemon never
    holds more than three (its thread's and two ahead), so it needs at most three
    connections; the others waited in nginx, in one queue, where a worker that is slow
    for a while holds none of them."""
    import concurrent.futures
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: requests.get(f"{n.url}/sleep?seconds=0.2&n={i}", timeout=20),
                                range(10)))
    assert [a.status_code for a in answers] == [200] * 10
    wait_for(lambda: d.log().count(" => ") >= 10, 5, "every request in the log")
    accepted = d.log().count("connection accepted")
    # Three, and the test's readiness probe; with every request sent at once, ten.
    assert 1 <= accepted <= 4, f"{accepted} connections for 10 requests"


def test_a_request_that_waits_longer_than_the_connect_timeout_gets_504(daemon, nginx, tmp_path):
    """Five requests of 1.5 s at once to one thread, wsgi_connect_timeout 1s: three are sent
    and answered; the two waiting get 504 after 1 s (as a connect that times out), with a
    line in nginx's error log saying why, and the daemon never sees them."""
    import concurrent.futures
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};", location_extra="wsgi_connect_timeout 1s;")
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda i: requests.get(f"{n.url}/sleep?seconds=1.5&n={i}", timeout=20),
                                range(5)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 504, 504]
    assert n.error_log().count("upstream timed out waiting for room in the daemon: its workers were busy "
                               "with other requests for wsgi_connect_timeout") == 2
    wait_for(lambda: d.log().count(" => ") >= 3, 10, "the three requests sent in the log")
    assert d.log().count("GET /sleep") == 3


QUEUE_LOG_FORMAT = "log_format queue '$request_uri $status $wsgi_queue_time';"


def queue_log(log, count):
    """An access log in the `queue` format ([`QUEUE_LOG_FORMAT`]), once it has `count` lines:
    each request URI's (status, `$wsgi_queue_time`)."""
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= count, 5, f"{count} access-log lines")
    return {uri: (status, waited) for uri, status, waited in (line.split() for line in log.read_text().splitlines())}


def test_how_long_a_request_waited_in_the_queue_goes_to_the_access_log(daemon, nginx, tmp_path):
    """`$wsgi_queue_time`: three requests of 1 s fill the daemon's room; a fourth waits
    there for the first answer, about 1 s, and its access-log line says so (seconds with
    milliseconds, as `$upstream_connect_time`); the three sent at once say 0.000; a request
    that went through no queue logs "-"."""
    import concurrent.futures
    import time
    from conftest import free_port
    d, ini = busy_daemon(daemon, tmp_path)
    log, other = tmp_path / "queue.log", free_port()
    n = nginx(None, module=True, directives=f"wsgi_app {ini};",
              http_extra=f"{QUEUE_LOG_FORMAT} "
                         f"server {{ listen 127.0.0.1:{other}; location / {{ access_log {log} queue; return 204; }} }}",
              location_extra=f"access_log {log} queue;")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(requests.get, f"{n.url}/sleep?seconds=1&n={i}", timeout=20) for i in range(3)]
        time.sleep(0.3)
        waiting = pool.submit(requests.get, f"{n.url}/pid?waited", timeout=20)
        assert [f.result().status_code for f in slow] == [200] * 3
        assert waiting.result().status_code == 200
    assert requests.get(f"http://127.0.0.1:{other}/elsewhere", timeout=5).status_code == 204
    lines = queue_log(log, 5)
    assert [lines[f"/sleep?seconds=1&n={i}"][1] for i in range(3)] == ["0.000"] * 3
    waited = float(lines["/pid?waited"][1])
    assert 0.5 <= waited <= 1.5, f"waited {waited} s in the queue"
    assert lines["/elsewhere"][1] == "-"


def test_a_client_that_leaves_while_its_request_waits_costs_the_app_nothing(daemon, nginx, tmp_path):
    """Three requests of 1 s fill the daemon's room; a fourth client sends its request and
    goes away while it waits. nginx ends that request and the app never runs it;
    the queue goes on: a request after it is answered."""
    import concurrent.futures
    import socket
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(requests.get, f"{n.url}/sleep?seconds=1&n={i}", timeout=20) for i in range(3)]
        time.sleep(0.3)
        gone = socket.create_connection(("127.0.0.1", n.port))
        gone.sendall(b"GET /pid?client=gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        gone.close()
        assert [f.result().status_code for f in slow] == [200] * 3
    assert requests.get(f"{n.url}/pid?client=after", timeout=20).text.isdigit()
    wait_for(lambda: "client=after" in d.log(), 10, "the later request in the log")
    assert "client=gone" not in d.log()


def test_a_request_whose_client_left_keeps_its_room_until_the_daemon_is_done(daemon, nginx, tmp_path):
    """Three clients send requests of 1 s, filling the daemon's room, and go away after 0.3 s;
    three more wait in nginx meanwhile. The daemon's thread runs each of the three to its
    end anyway, so their room comes back only when it has closed their connections (which
    nginx half-closed): the waiting requests wait in nginx, 0.6 s or more in
    `$wsgi_queue_time`, not sent at once into a daemon still busy for 3 s (0.2 s). Each
    room comes back as its own request ends, at about 1, 2 and 3 s (the thread looks at
    its connections before it starts the next request it kept waiting; if it did not, all
    three would come back at about 2.9 s, after the last). All are answered,
    the three that were left are logged 499, and the room is whole again afterwards: three
    more requests go at once."""
    import concurrent.futures
    import socket
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    log = tmp_path / "queue.log"
    n = nginx(None, module=True, directives=f"wsgi_app {ini};", location_extra=f"access_log {log} queue;",
              http_extra=QUEUE_LOG_FORMAT)
    left = []
    for i in range(3):
        client = socket.create_connection(("127.0.0.1", n.port))
        client.sendall(f"GET /sleep?seconds=1&left={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        left.append(client)
    time.sleep(0.1)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(requests.get, f"{n.url}/pid?waiting={i}", timeout=20) for i in range(3)]
        time.sleep(0.2)
        for client in left:
            client.close()
        assert all(f.result().text.isdigit() for f in waiting)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        after = list(pool.map(lambda i: requests.get(f"{n.url}/pid?after={i}", timeout=20), range(3)))
    assert all(a.text.isdigit() for a in after)
    lines = queue_log(log, 9)
    assert [lines[f"/sleep?seconds=1&left={i}"][0] for i in range(3)] == ["499"] * 3
    waited = [float(lines[f"/pid?waiting={i}"][1]) for i in range(3)]
    assert all(w >= 0.6 for w in waited), f"the waiting requests went to a busy daemon after {waited} s"
    first, second, _ = sorted(waited)
    assert first < 1.5 and second < 2.5, f"the rooms came back after {waited} s, not as each left request ended"
    assert [lines[f"/pid?after={i}"][1] for i in range(3)] == ["0.000"] * 3
    # The daemon ran the requests whose clients had left.
    wait_for(lambda: d.log().count("left=") >= 3, 10, "the three requests left in the daemon's log")


def test_a_request_that_timed_out_keeps_its_room_for_one_more_read_timeout_at_most(daemon, nginx, tmp_path):
    """wsgi_read_timeout 500ms and three requests of 1.6 s, the daemon's room: their clients
    get 504 after 0.5 s, and the daemon runs them on, one after another. Their room is kept
    for one more read timeout: a fourth request, sent at 0.7 s, waits in nginx until 1 s
    ($wsgi_queue_time 0.2 s or more), when nginx's error log says, for each of the three
    (naming its request line), that the daemon was still running it, and the room goes to
    the next request. Room given back at once, it would have been sent at once (0.000)."""
    import concurrent.futures
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    log = tmp_path / "queue.log"
    n = nginx(None, module=True, directives=f"wsgi_app {ini};",
              location_extra=f"wsgi_read_timeout 500ms; access_log {log} queue;", http_extra=QUEUE_LOG_FORMAT)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        timed_out = [pool.submit(requests.get, f"{n.url}/sleep?seconds=1.6&n={i}", timeout=20) for i in range(3)]
        time.sleep(0.7)
        fourth = pool.submit(requests.get, f"{n.url}/pid?fourth", timeout=20)
        assert [f.result().status_code for f in timed_out] == [504] * 3
        fourth.result()
    def warning(i):
        return (f'the daemon was still running a request nginx had ended ("GET /sleep?seconds=1.6&n={i} '
                'HTTP/1.1"), wsgi_read_timeout after: its room goes to the next request')
    wait_for(lambda: all(warning(i) in n.error_log() for i in range(3)), 5,
             "the lines saying the room was given back, naming each request")
    waited = float(queue_log(log, 4)["/pid?fourth"][1])
    assert waited >= 0.2, f"the fourth request was sent after {waited} s, while the daemon ran the three"


def test_nginx_reloaded_while_a_request_left_runs_in_the_daemon_waits_for_it_then_exits(daemon, nginx, tmp_path):
    """A client leaves its request of 1.5 s after 0.3 s, and nginx is reloaded while the
    daemon still runs it: a request after the reload is answered (by the new worker, once
    the daemon's thread is free), and the old worker, which keeps the left request's room
    and connection, is still shutting down after the reload and exits once the daemon is
    done: no worker left behind, no alert in nginx's error log (a connection left open as
    a worker exits is one)."""
    import socket
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")

    def workers():
        children = subprocess.run(["pgrep", "-P", str(n.proc.pid)], capture_output=True, text=True).stdout.split()
        return [open(f"/proc/{pid}/cmdline").read().strip("\0") for pid in children
                if pathlib.Path(f"/proc/{pid}/cmdline").exists()]

    assert requests.get(f"{n.url}/pid", timeout=5).text.isdigit()
    client = socket.create_connection(("127.0.0.1", n.port))
    client.sendall(b"GET /sleep?seconds=1.5&left=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    client.close()
    time.sleep(0.2)
    assert reload(n).returncode == 0
    wait_for(lambda: "nginx: worker process is shutting down" in workers(), 5, "the old worker shutting down")
    assert requests.get(f"{n.url}/pid?after=reload", timeout=10).text.isdigit()
    wait_for(lambda: workers() == ["nginx: worker process"], 10, "the old worker to exit")
    assert "[alert]" not in n.error_log()
    assert "left=1" in d.log()


def test_waiting_requests_go_in_order_of_arrival_when_one_leaves_between_them(daemon, nginx, tmp_path):
    """Three requests of 1 s fill the daemon's room; then three clients send a request each,
    in turn, and the second goes away while they wait. The first and the third are
    answered, in the order they came, and the second never reaches the app."""
    import concurrent.futures
    import socket
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};", location_extra="wsgi_connect_timeout 10s;")
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        slow = [pool.submit(requests.get, f"{n.url}/sleep?seconds=1&n={i}", timeout=20) for i in range(3)]
        time.sleep(0.3)
        first = pool.submit(requests.get, f"{n.url}/pid?client=first", timeout=20)
        time.sleep(0.1)
        gone = socket.create_connection(("127.0.0.1", n.port))
        gone.sendall(b"GET /pid?client=gone HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        third = pool.submit(requests.get, f"{n.url}/pid?client=third", timeout=20)
        time.sleep(0.1)
        gone.close()
        assert [f.result().status_code for f in slow] == [200] * 3
        assert first.result().text.isdigit() and third.result().text.isdigit()
    wait_for(lambda: "client=third" in d.log(), 10, "the third request in the log")
    log = d.log()
    assert "client=gone" not in log
    assert log.index("client=first") < log.index("client=third")


def connections_to(address):
    """Connections made to a daemon's socket, accepted or not, seen from the kernel: for
    a unix socket path, the sockets named after it but its listener (/proc/net/unix); for
    a TCP port, the established sockets whose local port it is (/proc/net/tcp)."""
    if isinstance(address, int):
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        return sum(1 for row in rows if int(row[1].split(":")[1], 16) == address and row[3] == "01")
    with open("/proc/net/unix") as table:
        return sum(1 for line in table if line.rstrip().endswith(" " + address)) - 1


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_nginx_workers_share_out_the_daemons_room(daemon, nginx, tmp_path, transport):
    """nginx with 4 workers (`reuseport` spreads the connections among them) and 40
    requests of 0.4 s at once to a daemon with 2 processes of 2 threads: the workers share
    out its room (8: 2 x (2 threads + 2 ahead)) by how many requests each has, and all
    together send it no more than that but for the first request of each worker: at most
    11, whatever the order the requests reach the workers in. Shares alone let the first
    requests of a burst, which come before the others' demand is seen, take 12 or more
    in 9 orders of 10 (and up to 16); without shares, each worker sends 8. Seen from the
    kernel while the first run: the connections open to the daemon's socket (none is idle
    yet). All are answered. Over TCP, beside a second daemon on the same host: each
    daemon has its own shares."""
    import concurrent.futures
    import time
    from conftest import free_port
    if transport == "unix":
        address = str(tmp_path / "app.sock")
        ini = write_ini(tmp_path, f"socket = {address}\nwsgi-file = {APPS}/pep3333.py\n"
                                  "processes = 2\nthreads = 2\n")
        d = daemon(ini, ready=address)
        locations = f"location / {{ wsgi_app {ini}; }}"
    else:
        address, other = free_port(), free_port()
        ini = write_ini(tmp_path, f"socket = 127.0.0.1:{address}\nwsgi-file = {APPS}/pep3333.py\n"
                                  "processes = 2\nthreads = 2\n")
        other_ini = write_ini(tmp_path, f"socket = 127.0.0.1:{other}\nwsgi-file = {APPS}/pep3333.py\n",
                              name="other.ini")
        d = daemon(ini, ready=("127.0.0.1", address))
        daemon(other_ini, ready=("127.0.0.1", other))
        locations = f"location / {{ wsgi_app {ini}; }} location /other/ {{ wsgi_app {other_ini}; }}"
    n = nginx(None, module=True, conf_text=whole_nginx_conf(locations, workers=4, listen="reuseport"))
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(requests.get, f"{n.url}/sleep?seconds=0.4&n={i}", timeout=30) for i in range(40)]
        held = []
        for _ in range(3):
            time.sleep(0.08)
            held.append(connections_to(address))
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * 40
    assert 1 <= max(held) <= 11, f"connections to the daemon before its first answer: {held}"
    # Then quick requests from 40 clients at once, in bursts: every one answered, and no
    # nginx worker ended by a signal on the way (a worker's queue runs on events of its
    # own and on a timer while requests wait).
    for _ in range(5):
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda i: requests.get(f"{n.url}/pid?n={i}", timeout=30), range(80)))
        assert [a.status_code for a in answers] == [200] * 80
        time.sleep(0.05)
    assert "exited on signal" not in n.error_log()
    assert d.log().count("GET /pid") >= 400


def test_a_request_waiting_in_one_nginx_worker_goes_when_another_workers_requests_end(daemon, nginx, tmp_path):
    """Two nginx workers, a daemon with 4 threads (room 1 x (4 + 2) = 6). Worker B has 12
    requests of 0.3 s; worker A one of 3 s, then a quick one, which waits: A's share is 1
    (2 of 14 requests). As B's are answered, A's share grows, and A sends its quick request
    although no answer of its own comes before 3 s (it looks again every few ms): the
    quick one is answered in about 1 s, not 3."""
    import concurrent.futures
    import http.client
    import time
    sock = tmp_path / "app.sock"
    ini = write_ini(tmp_path, f"socket = {sock}\nwsgi-file = {APPS}/pep3333.py\nprocesses = 1\nthreads = 4\n")
    daemon(ini, ready=str(sock))
    n = nginx(None, module=True,
              conf_text=whole_nginx_conf(f"location / {{ wsgi_app {ini}; add_header X-Worker $pid always; }}",
                                        workers=2, listen="reuseport"))
    by_worker = {}
    for _ in range(60):
        c = http.client.HTTPConnection("127.0.0.1", n.port, timeout=30)
        c.request("GET", "/pid")
        r = c.getresponse()
        r.read()
        by_worker.setdefault(r.getheader("X-Worker"), []).append(c)
    assert len(by_worker) == 2, f"connections by nginx worker: {({k: len(v) for k, v in by_worker.items()})}"
    a, b = sorted(by_worker.values(), key=len)
    assert len(a) >= 2 and len(b) >= 12, f"{len(a)} and {len(b)} connections on the two workers"

    def get(c, path):
        start = time.monotonic()
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(14) as pool:
        b_requests = [pool.submit(get, c, "/sleep?seconds=0.3") for c in b[:12]]
        time.sleep(0.1)
        slow = pool.submit(get, a[0], "/sleep?seconds=3")
        time.sleep(0.1)
        quick = pool.submit(get, a[1], "/pid")
        assert [f.result()[0] for f in b_requests] == [200] * 12
        status, took = quick.result()
        assert status == 200
        assert took < 2.2, f"the quick request took {took:.2f} s: it waited for its worker's slow one"
        assert slow.result()[0] == 200


def test_a_body_sent_as_it_comes_waits_in_the_queue_without_timing_out(daemon, nginx, tmp_path):
    """With `wsgi_request_buffering off`, nginx starts a request before its body is in.
    Waiting 2 s in the queue, longer than `client_body_timeout 1s`, the request is sent
    when there is room and its whole body reaches the app (the body's timer is not the
    request's while it waits, as in nginx's own upstream)."""
    import concurrent.futures
    import socket
    import time
    d, ini = busy_daemon(daemon, tmp_path)
    n = nginx(None, module=True, directives=f"wsgi_app {ini};",
              location_extra="wsgi_request_buffering off; client_body_timeout 1s;")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(requests.get, f"{n.url}/sleep?seconds=2&n={i}", timeout=20) for i in range(3)]
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", n.port), timeout=20) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n01234")
            time.sleep(0.2)
            s.sendall(b"56789")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert [f.result().status_code for f in slow] == [200] * 3
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answer.endswith(b"\r\n\r\n0123456789"), answer[-200:]
