"""Request log lines as uWSGI writes them: the default line compared field by field with
real uWSGI's (pyuwsgi) for the same request through the same nginx, log-format with
uWSGI's variables (in an ini, where they are not placeholders), log-x-forwarded-for,
req-logger to a file and to a syslog server, logfile-chown."""

import os
import pwd
import re
import socket
import subprocess
import time

import requests

from conftest import APPS, VENV, can_connect, free_port, wait_for

APP = APPS / "pep3333.py"

# An app both servers run alike (pep3333.py's validator refuses uWSGI's environ).
PLAIN_APP = """
def application(environ, start_response):
    if environ["PATH_INFO"] == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        status, body = "200 OK", environ["wsgi.input"].read(length) or environ["QUERY_STRING"].encode()
    else:
        status, body = "404 Not Found", b"not found"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

# uWSGI's default request line (its logging code's format), every field captured.
UWSGI_LINE = re.compile(
    r"^\[pid: (?P<pid>\d+)\|app: (?P<app>\d+)\|req: (?P<wreq>\d+)/(?P<total>\d+)\] (?P<addr>\S+) \((?P<user>[^)]*)\) "
    r"\{(?P<vars>\d+) vars in (?P<pktsize>\d+) bytes\} \[(?P<ltime>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\] "
    r"(?P<method>\S+) (?P<uri>\S+) => generated (?P<size>\d+) bytes in (?P<took>\d+) (?P<unit>msecs|micros) "
    r"\((?P<proto>\S+) (?P<status>\d+)\) (?P<headers>\d+) headers in (?P<hsize>\d+) bytes "
    r"\((?P<switches>\d+) switches on core (?P<core>\d+)\)$",
    re.M,
)


def request_lines(text):
    return [m.groupdict() for m in UWSGI_LINE.finditer(text)]


def test_default_line_is_uwsgis_field_for_field(daemon, nginx, tmp_path, app_sock):
    """The same requests through stock uwsgi_pass to ngx-wsgi and to uWSGI: both lines
    parse with uWSGI's format and agree on everything but pids, times and durations."""
    app = tmp_path / "plain.py"
    app.write_text(PLAIN_APP)
    d = daemon("--socket", app_sock, "--wsgi-file", app, ready=app_sock)
    ours = nginx(f"unix:{app_sock}")
    uwsgi_sock = str(tmp_path / "uwsgi.sock")
    uwsgi_log = tmp_path / "uwsgi.log"
    proc = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--socket", uwsgi_sock, "--wsgi-file", str(app),
                             "--logto", str(uwsgi_log)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: can_connect(uwsgi_sock), 15, "uWSGI")
        theirs = nginx(f"unix:{uwsgi_sock}")
        asks = [("get", "/echo?x=1", None), ("post", "/echo", b"z" * 1000), ("get", "/no-such-page", None)]
        for n in (ours, theirs):
            for method, path, data in asks:
                getattr(requests, method)(n.url + path, data=data, headers={"User-Agent": "t/1"}, timeout=5)
        wait_for(lambda: len(request_lines(d.log())) == 3, 5, "our three lines")
        wait_for(lambda: len(request_lines(uwsgi_log.read_text())) == 3, 5, "uWSGI's three lines")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    mine, reference = request_lines(d.log()), request_lines(uwsgi_log.read_text())
    # uWSGI counts 2 switches on core 0 when the body arrives in two reads: timing.
    varying = ("pid", "ltime", "took", "switches")
    for a, b in zip(mine, reference):
        a, b = ({k: v for k, v in line.items() if k not in varying} for line in (a, b))
        assert a == b, (a, b)
    assert [(m["method"], m["uri"], m["status"]) for m in mine] == [
        ("GET", "/echo?x=1", "200"), ("POST", "/echo", "200"), ("GET", "/no-such-page", "404")]
    assert [m["wreq"] for m in mine] == ["1", "2", "3"]
    assert {m["switches"] for m in mine} == {"1"}


def test_default_line_over_the_http_listener_and_log_micros(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--log-micros",
               ready=("127.0.0.1", port))
    requests.get(f"http://127.0.0.1:{port}/echo?q=1", timeout=5)
    line = wait_for(lambda: request_lines(d.log()), 5, "the line")[0]
    assert (line["addr"], line["method"], line["uri"], line["proto"], line["status"], line["unit"]) == (
        "127.0.0.1", "GET", "/echo?q=1", "HTTP/1.1", "200", "micros")
    assert int(line["vars"]) > 20 and int(line["pktsize"]) > 100
    assert int(line["hsize"]) > 20
    assert (line["wreq"], line["total"]) == ("1", "1")


def test_log_format_in_an_ini_uses_uwsgis_variables(daemon, nginx, tmp_path, app_sock):
    ini = tmp_path / "app.ini"
    ini.write_text(
        "[uwsgi]\n"
        f"socket = {app_sock}\n"
        f"wsgi-file = {APP}\n"
        "tag = T1\n"
        # %(tag) is a placeholder of this file; the others are the logger's.
        "log-format = %(tag) %(addr) - %(user) [%(ltime)] \"%(method) %(uri) %(proto)\" %(status) %(size) "
        "\"%(referer)\" \"%(uagent)\" %(msecs)ms %(micros)us pid=%(pid) wid=%(wid) core=%(core) "
        "hs=%(headers)/%(hsize) t=%(time) v=%(var.HTTP_X_TRACE) rss=%(rssM) nothing=[%(no-such-var)]\n"
    )
    d = daemon(ini, ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    requests.post(n.url + "/echo?a=b", data=b"12345", timeout=5,
                  headers={"Referer": "http://r/", "User-Agent": "agent/2", "X-Trace": "abc"})
    line = wait_for(lambda: re.search(r"^T1 .*$", d.log(), re.M), 5, "the formatted line").group(0)
    pattern = (r"T1 127\.0\.0\.1 -  \[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] \"POST /echo\?a=b HTTP/1\.1\" 200 5 "
               r"\"http://r/\" \"agent/2\" \d+ms \d+us pid=(\d+) wid=1 core=0 hs=\d+/\d+ t=(\d+) v=abc rss=\d+ "
               r"nothing=\[\]$")
    match = re.fullmatch(pattern, line)
    assert match, line
    assert int(match.group(1)) in d.worker_pids()
    assert abs(int(match.group(2)) - time.time()) < 60


def test_logformat_strftime_applies_to_the_formats_text(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--log-format", "at %Y-%m-%d %(method) %(status)", "--logformat-strftime", ready=("127.0.0.1", port))
    requests.get(f"http://127.0.0.1:{port}/echo", timeout=5)
    line = wait_for(lambda: re.search(r"^at .*$", d.log(), re.M), 5, "the line").group(0)
    assert line == "at " + time.strftime("%Y-%m-%d") + " GET 200"


def test_log_x_forwarded_for_names_the_client(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--log-x-forwarded-for",
               ready=("127.0.0.1", port))
    requests.get(f"http://127.0.0.1:{port}/echo", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}, timeout=5)
    requests.get(f"http://127.0.0.1:{port}/echo", timeout=5)
    lines = wait_for(lambda: len(request_lines(d.log())) == 2 and request_lines(d.log()), 5, "two lines")
    assert [line["addr"] for line in lines] == ["203.0.113.7", "127.0.0.1"]


def test_req_logger_file_gets_the_request_lines_only(daemon, tmp_path):
    port = free_port()
    requests_log = tmp_path / "requests.log"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--req-logger", f"file:{requests_log}",
               ready=("127.0.0.1", port))
    for _ in range(3):
        requests.get(f"http://127.0.0.1:{port}/echo", timeout=5)
    wait_for(lambda: requests_log.exists() and len(request_lines(requests_log.read_text())) == 3, 5, "three lines")
    # Only request lines there; none in the main log.
    assert len(requests_log.read_text().splitlines()) == 3
    assert request_lines(d.log()) == []
    assert "listening on" in d.log()


def test_rsyslog_logger_sends_syslog_datagrams(daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        syslog_port = server.getsockname()[1]
        port = free_port()
        daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--req-logger", f"rsyslog:127.0.0.1:{syslog_port},mysite", ready=("127.0.0.1", port))
        requests.get(f"http://127.0.0.1:{port}/echo?s=1", timeout=5)
        message = server.recv(65536).decode()
    match = re.fullmatch(r"<14>\w{3} [ \d]\d \d\d:\d\d:\d\d mysite\[(\d+)\]: (.*)", message)
    assert match, message
    [line] = request_lines(match.group(2))
    assert line["uri"] == "/echo?s=1" and line["status"] == "200"


def test_a_logger_that_cannot_be_opened_is_a_clear_error(daemon, tmp_path):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--req-logger", f"file:{tmp_path}/no/such/dir/requests.log")
    d.wait_exit()
    assert f'req-logger: "{tmp_path}/no/such/dir/requests.log": No such file or directory' in d.log()


def test_unknown_logger_is_refused_at_check(tmp_path):
    from conftest import check_config
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--logger", "zeromq:tcp://x")
    assert out.returncode != 0
    assert ('invalid value "zeromq:tcp://x" for option "logger": expected file:PATH, stdio, syslog[:IDENT] '
            "or rsyslog:HOST:PORT[,IDENT] (uWSGI's other loggers are not provided)") in out.stderr


def test_logfile_chown_gives_the_log_to_the_apps_user(daemon, tmp_path):
    port = free_port()
    logfile = tmp_path / "app.log"
    os.chmod(tmp_path, 0o755)
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--logto", logfile,
           "--uid", "nobody", "--gid", "nogroup", "--logfile-chown", ready=("127.0.0.1", port))
    assert logfile.stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_logger_sends_the_daemons_own_lines(daemon, tmp_path):
    # file: as logto does; rsyslog: each line whole, in one datagram.
    port = free_port()
    logfile = tmp_path / "daemon.log"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--logger", f"file:{logfile}",
           ready=("127.0.0.1", port))
    assert f'listening on "127.0.0.1:{port}"' in logfile.read_text()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        port = free_port()
        daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--logger", f"rsyslog:127.0.0.1:{server.getsockname()[1]}", ready=("127.0.0.1", port))
        messages = [server.recv(65536).decode() for _ in range(2)]
    assert re.fullmatch(r"<14>.* ngx-wsgi\[\d+\]: .*\[info\] master \d+: "
                        f'listening on "127.0.0.1:{port}" \\(Http\\)', messages[0]), messages


def test_the_installed_logrotate_snippet_rotates_a_live_log(daemon, tmp_path):
    """make install's /etc/logrotate.d/ngx-wsgi, run by Debian's logrotate on a log the
    daemon is writing: the old lines are in the rotated file, the new ones in the log,
    and none is lost or garbled."""
    from conftest import ROOT
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={tmp_path}/root"], check=True,
                   capture_output=True)
    snippet = (tmp_path / "root/etc/logrotate.d/ngx-wsgi").read_text()
    logs = tmp_path / "log"
    logs.mkdir()
    (tmp_path / "logrotate.conf").write_text(snippet.replace("/var/log/ngx-wsgi/", f"{logs}/"))
    port = free_port()
    logfile = logs / "mysite.log"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--logto", logfile,
               ready=("127.0.0.1", port))
    for i in range(5):
        requests.get(f"http://127.0.0.1:{port}/echo?before={i}", timeout=5)
    wait_for(lambda: len(request_lines(logfile.read_text())) == 5, 5, "five lines")
    subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
                   check=True)
    for i in range(3):
        requests.get(f"http://127.0.0.1:{port}/echo?after={i}", timeout=5)
    wait_for(lambda: len(request_lines(logfile.read_text())) == 3, 5, "three new lines")
    rotated = (logs / "mysite.log.1").read_text()
    assert [line["uri"] for line in request_lines(rotated)] == [f"/echo?before={i}" for i in range(5)]
    assert [line["uri"] for line in request_lines(logfile.read_text())] == [f"/echo?after={i}" for i in range(3)]
    assert "\0" not in logfile.read_text()
    assert d.proc.poll() is None
