"""The daemon read from uWSGI INI and XML files and from TOML: same meaning, same service;
--check-config; the uWSGI options those files bring (harakiri, max-requests, uid/gid,
limit-post, daemonize)."""

import os
import pathlib
import re
import signal
import socket
import subprocess

import pytest
import requests

from conftest import APPS, BIN, can_connect, check_config, free_port, pid_alive, wait_for


def same_app_three_ways(tmp_path, port):
    """One deployment written as INI, XML and TOML."""
    ini = tmp_path / "site.ini"
    ini.write_text(f"""\
[uwsgi]
; as a uWSGI user writes it
base = {APPS}
http-socket = 127.0.0.1:{port}
wsgi-file = %(base)/pep3333.py
processes = 2
master
env = GREETING=hello from the config
disable-logging = true
""")
    xml = tmp_path / "site.xml"
    xml.write_text(f"""<uwsgi>
  <http-socket>127.0.0.1:{port}</http-socket>
  <wsgi-file>{APPS}/pep3333.py</wsgi-file>
  <processes>2</processes>
  <master/>
  <env>GREETING=hello from the config</env>
  <disable-logging>true</disable-logging>
</uwsgi>
""")
    toml = tmp_path / "site.toml"
    toml.write_text(f"""http-socket = "127.0.0.1:{port}"
wsgi-file = "{APPS}/pep3333.py"
processes = 2
master = true
env = ["GREETING=hello from the config"]
disable-logging = true
""")
    return ini, xml, toml


def test_ini_xml_and_toml_of_the_same_meaning_serve_identically(daemon, tmp_path):
    port = free_port()
    files = same_app_three_ways(tmp_path, port)
    printed = {check_config(f).stdout for f in files}
    assert len(printed) == 1, printed  # the same effective config
    seen = []
    for f in files:
        d = daemon(f, ready=("127.0.0.1", port))
        environ = requests.get(f"http://127.0.0.1:{port}/environ").json()
        greeting = requests.get(f"http://127.0.0.1:{port}/osenv?name=GREETING").text
        echo = requests.post(f"http://127.0.0.1:{port}/echo", data=b"body").text
        workers = len(wait_for(lambda: len(d.worker_pids()) == 2 and d.worker_pids(), 10, "two workers"))
        seen.append((greeting, environ["wsgi.multiprocess"], echo, workers))
        d.stop()
        wait_for(lambda: not pathlib.Path(f"/proc/{d.pid}").exists() or not pid_alive(d.pid), 10, "stop")
    assert seen == [("hello from the config", True, "body", 2)] * 3


def test_check_config_prints_the_effective_config_with_the_command_line_on_top(tmp_path):
    ini, _, _ = same_app_three_ways(tmp_path, 8000)
    out = check_config(ini, "--processes", "5", "--socket", "/run/other.sock")
    assert out.returncode == 0, out.stderr
    assert "processes = 5\n" in out.stdout
    assert 'socket = ["/run/other.sock"]' in out.stdout
    assert f'wsgi-file = "{APPS}/pep3333.py"' in out.stdout
    # What it prints is a config: it checks again to the same thing.
    printed = tmp_path / "printed.toml"
    printed.write_text(out.stdout)
    assert check_config(printed).stdout == out.stdout


def test_check_config_reports_every_error_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("""\
[uwsgi]
sokcet = /run/app.sock
module = app
emperor = /etc/vassals
processes = 2 # workers
chmod-socket = 0999
processes = -1
buffer-size = 12q
""")
    out = check_config(bad)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert f'ngx-wsgi: {bad}:2: unknown option "sokcet", did you mean "socket"?' in lines
    assert any(line.startswith(f'ngx-wsgi: {bad}:4: option "emperor" is a uWSGI option ngx-wsgi does not '
                               "provide: run one ngx-wsgi per app as a systemd unit") for line in lines)
    assert (f'ngx-wsgi: {bad}:6: invalid value "0999" for option "chmod-socket": '
            "expected 3 octal digits such as 660") in lines
    assert (f'ngx-wsgi: {bad}:7: invalid value "-1" for option "processes": '
            "expected a whole number of at least 1") in lines
    assert (f'ngx-wsgi: {bad}:8: invalid value "12q" for option "buffer-size": '
            "expected a size in bytes of at least 1 (e.g. 32768, 32k or 64k)") in lines
    assert f"ngx-wsgi: {bad}: nowhere to listen: set socket, http-socket or http" in lines


def test_inline_comment_is_stripped_with_a_warning_naming_the_line(daemon, tmp_path):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {APPS}/pep3333.py\n"
                   "processes = 2   # two workers\n")
    d = daemon("--ini", ini, ready=("127.0.0.1", port))
    wait_for(lambda: len(d.worker_pids()) == 2, 10, "two workers")
    assert (f'{ini}:4: "# two workers" after the value of processes is read as a comment '
            "(uWSGI would make it part of the value)") in d.log()


def test_harakiri_logs_the_stuck_request_and_its_python_stack_then_replaces_the_worker(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--harakiri", "1",
               ready=("127.0.0.1", port))
    first = requests.get(f"{url}/pid").text
    try:
        r = requests.get(f"{url}/sleep?seconds=30", timeout=10)
        raise AssertionError(f"a stuck request was answered: {r.status_code}")
    except requests.ConnectionError:
        pass  # the worker died with it, as under uWSGI; the log says why
    d.wait_log(r"HARAKIRI: GET /sleep\?seconds=30 \(from .*\) has run for 1\.\d s, over harakiri = 1 s")
    log = d.wait_log(r"was killed by SIGKILL; respawning it")
    assert re.search(r'File ".*pep3333\.py", line \d+ in validated', d.log()), d.log()
    second = wait_for(lambda: requests.get(f"{url}/pid", timeout=5).text, 10, "a new worker")
    assert second != first and log


def test_max_requests_recycles_the_worker_without_failing_a_request(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--max-requests", "3", "--disable-logging", ready=("127.0.0.1", port))
    pids = []
    for _ in range(7):
        with requests.Session() as s:  # a connection per request: a recycled worker closes its own
            pids.append(wait_for(lambda: s.get(f"{url}/pid", timeout=5).text, 10, "a worker"))
    assert pids[0] == pids[1] == pids[2] != pids[3], pids
    assert pids[3] == pids[4] == pids[5] != pids[6], pids
    assert "request 3 started, max-requests = 3" in d.log()
    assert "retired itself (reason above); starting its replacement" in d.log()


def test_limit_post_refuses_larger_bodies_with_413(daemon, nginx, tmp_path, app_sock):
    port = free_port()
    d = daemon("--socket", app_sock, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file",
               APPS / "pep3333.py", "--limit-post", "1k", ready=[app_sock, ("127.0.0.1", port)])
    n = nginx(f"unix:{app_sock}")
    assert requests.post(f"{n.url}/echo", data=b"x" * 1024).text == "x" * 1024
    r = requests.post(f"{n.url}/echo", data=b"x" * 1025)
    assert r.status_code == 413
    assert "request body of 1025 bytes is over limit-post = 1024 bytes" in r.text
    r = requests.post(f"http://127.0.0.1:{port}/echo", data=b"x" * 4000)
    assert r.status_code == 413
    d.wait_log(r"POST /echo => 413: request body of 4000 bytes is over limit-post = 1024 bytes")
    # Chunked, no length declared: refused once the limit is passed, not after the whole body.
    r = requests.post(f"http://127.0.0.1:{port}/echo", data=(b"x" * 1000 for _ in range(4)))
    assert r.status_code == 413
    d.wait_log(r"POST /echo => 413: request body of \d+ bytes is over limit-post = 1024 bytes "
               r"\(chunked: reading stopped there\)")
    assert requests.get(f"{n.url}/pid").status_code == 200


def test_uid_and_gid_drop_root_after_binding(daemon, tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to switch users")
    # A privileged port when free: bound as root, served as nobody.
    port = 80 if can_bind(80) else free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--uid", "nobody", "--gid", "nogroup", "--chdir", "/", ready=("127.0.0.1", port))
    pid = int(requests.get(f"http://127.0.0.1:{port}/pid").text)
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    uid = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M).groups()
    gid = re.search(r"^Gid:\s+(\d+)\s+(\d+)", status, re.M).groups()
    assert uid == ("65534", "65534") and gid == ("65534", "65534"), status
    assert "running as uid 65534 gid 65534" in d.log()


def can_bind(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_daemonize_returns_at_once_and_serves_in_the_background(tmp_path):
    port = free_port()
    log, pidfile = tmp_path / "daemon.log", tmp_path / "app.pid"
    out = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
                          "--daemonize", log, "--pidfile", pidfile], capture_output=True, text=True,
                         timeout=10, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    try:
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile"))
        # The pidfile comes first, as in uWSGI: the socket may not be bound yet.
        wait_for(lambda: can_connect(("127.0.0.1", port)), 15, "the daemon to listen")
        assert requests.get(f"http://127.0.0.1:{port}/pid", timeout=5).ok
        assert os.getsid(pid) == pid  # a session of its own
        assert "listening on" in log.read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGINT)


def test_sighup_rereads_the_file_keeps_sockets_and_refuses_a_broken_one(daemon, tmp_path):
    p1, p2 = free_port(), free_port()
    ini = tmp_path / "app.ini"
    base = f"[uwsgi]\nwsgi-file = {APPS}/pep3333.py\ndisable-logging = true\n"
    ini.write_text(base + f"http-socket = 127.0.0.1:{p1}\nenv = WHICH=first\n")
    d = daemon(ini, ready=("127.0.0.1", p1))
    url1, url2 = f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
    assert requests.get(f"{url1}/osenv?name=WHICH").text == "first"

    # A second listener, two workers, a new environment: all taken by a reload.
    ini.write_text(base + f"http-socket = 127.0.0.1:{p1}\nhttp-socket = 127.0.0.1:{p2}\n"
                          "processes = 2\nenv = WHICH=second\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: requests.get(f"{url1}/osenv?name=WHICH", timeout=5).text == "second", 15, "the reload")
    assert requests.get(f"{url2}/osenv?name=WHICH").text == "second"
    wait_for(lambda: len(d.worker_pids()) == 2, 15, "two workers")
    assert f'reload: new listener "127.0.0.1:{p2}"' in d.log()

    # A broken file: refused, with its error; the running config keeps serving.
    ini.write_text(base + f"http-socket = 127.0.0.1:{p1}\nprocesess = 3\n")
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused: the new config or the app does not load")
    assert f'{ini}:5: unknown option "procesess", did you mean "processes"?' in d.log()
    assert requests.get(f"{url2}/osenv?name=WHICH").text == "second"

    # A listener the file no longer has is closed.
    ini.write_text(base + f"http-socket = 127.0.0.1:{p2}\nenv = WHICH=third\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: requests.get(f"{url2}/osenv?name=WHICH", timeout=5).text == "third", 15, "the reload")
    assert f"reload: no longer listening on Http 127.0.0.1:{p1}" in d.log()
    try:
        requests.get(f"{url1}/pid", timeout=2)
        raise AssertionError("the removed listener still accepts")
    except requests.ConnectionError:
        pass


def test_reload_on_rss_replaces_a_worker_that_grew(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--reload-on-rss", "64", "--disable-logging", ready=("127.0.0.1", port))
    with requests.Session() as s:
        first = s.get(f"{url}/leak?mib=10").text
    with requests.Session() as s:
        assert s.get(f"{url}/pid").text == first  # still under 64 MiB
    with requests.Session() as s:
        assert s.get(f"{url}/leak?mib=80").text == first  # the request itself is served
    d.wait_log(r"resident memory \d+ MiB is over reload-on-rss = 64 MiB")
    second = wait_for(lambda: requests.get(f"{url}/pid", timeout=5).text, 10, "a new worker")
    assert second != first
    d.wait_log(r"retired itself \(reason above\); starting its replacement")


def test_limit_as_gives_the_app_memory_error_not_a_dead_worker(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--limit-as", "1024", ready=("127.0.0.1", port))
    first = requests.get(f"{url}/pid").text
    r = requests.get(f"{url}/big?kib={2 << 20}")  # a 2 GiB response body
    assert r.status_code == 500
    d.wait_log("MemoryError")
    assert requests.get(f"{url}/pid").text == first


def test_log_4xx_5xx_and_slow_keep_those_lines_with_disable_logging(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--disable-logging",
               "--log-4xx", "--log-5xx", "--log-slow", "300", ready=("127.0.0.1", port))
    assert requests.get(f"{url}/pid").ok
    assert requests.get(f"{url}/no-such-page").status_code == 404
    assert requests.get(f"{url}/excinfo").status_code == 500
    assert requests.get(f"{url}/sleep?seconds=0.4").ok
    d.wait_log(r"GET /sleep\?seconds=0.4 => generated \d+ bytes in \d+ msecs \(HTTP/1.1 200\)")
    log = d.log()
    assert re.search(r"GET /no-such-page => generated \d+ bytes in \d+ msecs \(HTTP/1.1 404\)", log)
    assert re.search(r"GET /excinfo => generated \d+ bytes in \d+ msecs \(HTTP/1.1 500\)", log)
    assert "GET /pid =>" not in log


def test_touch_reload_and_max_requests_delta(daemon, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    touch = tmp_path / "reload.txt"
    touch.write_text("v1")
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--touch-reload", touch,
               "--max-requests", "2", "--max-requests-delta", "3", "--disable-logging", ready=("127.0.0.1", port))
    # Worker 1 retires after 2 + 1×3 requests.
    pids = []
    for _ in range(6):
        with requests.Session() as s:
            pids.append(wait_for(lambda: s.get(f"{url}/pid", timeout=5).text, 10, "a worker"))
    assert len(set(pids[:5])) == 1 and pids[5] != pids[0], pids
    os.utime(touch, (1, 1))
    d.wait_log(f'touch-reload: "{touch}" changed: reloading')
    wait_for(lambda: requests.get(f"{url}/pid", timeout=5).text not in pids, 15, "a worker of the reload")


def test_harakiri_answers_504_through_nginx_before_replacing_the_worker(served):
    n, d = served("pep3333.py", "--harakiri", "1")
    first = requests.get(f"{n.url}/pid").text
    r = requests.get(f"{n.url}/sleep?seconds=30", timeout=10)
    assert r.status_code == 504
    assert r.text == "harakiri: the request ran longer than 1 s; the worker serving it is being replaced\n"
    d.wait_log(r"was killed by SIGKILL; respawning it")
    assert wait_for(lambda: requests.get(f"{n.url}/pid", timeout=5).text, 10, "a new worker") != first


def test_harakiri_504_through_wsgi_pass_with_reused_connections(daemon, nginx, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--harakiri", "1", ready=app_sock)
    n = nginx("app", module=True, http_extra=f"upstream app {{ server unix:{app_sock}; keepalive 4; }}")
    with requests.Session() as s:
        assert s.get(f"{n.url}/pid").ok
        r = s.get(f"{n.url}/sleep?seconds=30", timeout=10)
        assert r.status_code == 504 and "harakiri" in r.text
        # The kept-alive connections to the dead worker are gone; the next request finds a new one.
        assert wait_for(lambda: s.get(f"{n.url}/pid", timeout=5).ok, 10, "a new worker")
