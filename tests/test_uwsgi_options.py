"""uWSGI's worker-lifecycle, socket and response options, each as uWSGI means it.

The tests that replace workers under load count what clients saw through nginx: a
recycle that drops a request fails here. (They go through nginx's uwsgi_pass, not the
daemon's own HTTP listener, whose keep-alive connections a retiring worker still drops:
that is its own issue.)"""

import os
import re
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import APPS, BIN, check_config, command_line, free_port, pid_alive, wait_for

APP = APPS / "options_app.py"


def http_daemon(daemon, *extra, port=None):
    port = port or free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, *extra,
               ready=("127.0.0.1", port))
    return d, f"http://127.0.0.1:{port}"


def nginx_daemon(daemon, nginx, app_sock, *extra):
    d = daemon("--socket", app_sock, "--wsgi-file", APP, *extra, ready=app_sock)
    return d, nginx(f"unix:{app_sock}").url


def pid_of(url):
    return int(requests.get(url + "/", timeout=10).text)


class Load:
    """Clients sending requests in a loop, counting every outcome."""

    def __init__(self, url, clients=4):
        self.url, self.stop, self.outcomes = url, threading.Event(), []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        with requests.Session() as s:
            while not self.stop.is_set():
                try:
                    self.outcomes.append(s.get(self.url + "/", timeout=10).status_code)
                except requests.RequestException as err:
                    self.outcomes.append(type(err).__name__)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.outcomes


def test_max_worker_lifetime_replaces_workers_gracefully_losing_nothing(daemon, nginx, app_sock):
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "2", "--max-worker-lifetime", "2",
                          "--max-worker-lifetime-delta", "1")
    first = set(d.worker_pids())
    load = Load(url)
    d.wait_log(r"worker 2 \(pid \d+\) retired \(max-worker-lifetime\); starting its replacement", timeout=20)
    outcomes = load.finish()
    assert outcomes and set(outcomes) == {200}, f"{len(outcomes)} requests: {set(outcomes)}"
    log = d.log()
    # Worker 1 lives 2 s, worker 2 one second more (the delta), so they never go together.
    assert "worker 1 (pid" in log and "has run 2 s (max-worker-lifetime)" in log
    assert "has run 3 s (max-worker-lifetime)" in log
    assert not first & set(d.worker_pids())


def test_min_worker_lifetime_holds_max_requests_back(daemon):
    d, url = http_daemon(daemon, "--max-requests", "1", "--min-worker-lifetime", "2")
    started = time.monotonic()
    pids = set()
    while time.monotonic() - started < 1.5:
        pids.add(pid_of(url))
    assert len(pids) == 1, "max-requests 1 waited for min-worker-lifetime"
    time.sleep(1)
    pid_of(url)  # the first request after 2 s retires the worker
    d.wait_log(r"request \d+ started, max-requests = 1")
    assert wait_for(lambda: pid_of(url) not in pids, 10, "a new worker")


def test_min_worker_lifetime_must_be_below_max_worker_lifetime():
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--max-worker-lifetime", "10",
                       "--min-worker-lifetime", "10")
    assert out.returncode == 2
    assert ("min-worker-lifetime = 10 is not below max-worker-lifetime = 10: workers could never be "
            "replaced (uWSGI refuses it too)") in out.stderr


def test_reload_on_exception_replaces_the_worker_after_the_failing_request(daemon):
    d, url = http_daemon(daemon, "--reload-on-exception")
    before = pid_of(url)
    assert requests.get(url + "/raise", timeout=10).status_code == 500
    d.wait_log(r"the app raised an exception \(reload-on-exception\)")
    assert wait_for(lambda: pid_of(url) != before, 10, "a new worker")
    # Without the option the same worker goes on.
    d2, url2 = http_daemon(daemon)
    before = pid_of(url2)
    assert requests.get(url2 + "/raise", timeout=10).status_code == 500
    assert pid_of(url2) == before


def test_evil_reload_on_rss_kills_a_worker_over_the_limit_mid_request(daemon):
    d, url = http_daemon(daemon, "--evil-reload-on-rss", "80")
    before = pid_of(url)
    with pytest.raises(requests.ConnectionError):
        # 150 MiB held for 5 s: the master's once-a-second check kills it first.
        requests.get(url + "/alloc?150", headers={"X-Sleep": "5"}, timeout=20)
    d.wait_log(r"worker 1 \(pid \d+\): resident memory \d+ MiB is over evil-reload-on-rss = 80 MiB: killing it")
    d.wait_log(r"retired \(evil-reload-on-rss\); starting its replacement")
    assert wait_for(lambda: pid_of(url) != before, 10, "a new worker")


def test_touch_workers_reload_replaces_the_workers_not_the_master(daemon, tmp_path):
    stamp = tmp_path / "stamp"
    stamp.write_text("1")
    d, url = http_daemon(daemon, "--processes", "2", "--lazy-apps", "--touch-workers-reload", stamp)
    wait_for(lambda: len(d.worker_pids()) == 2, 10, "two workers")
    first = set(d.worker_pids())
    time.sleep(0.05)
    stamp.write_text("2")
    os.utime(stamp, (time.time() + 5, time.time() + 5))
    wait_for(lambda: len(set(d.worker_pids()) - first) == 2, 15, "two new workers")
    assert d.proc.poll() is None
    assert d.log().count("retired (touch-workers-reload)") == 2


def test_touch_chain_reload_replaces_one_worker_at_a_time(daemon, nginx, app_sock, tmp_path):
    stamp = tmp_path / "stamp"
    stamp.write_text("1")
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "3", "--lazy-apps",
                          "--touch-chain-reload", stamp)
    wait_for(lambda: len(d.worker_pids()) == 3, 10, "three workers")
    load = Load(url)
    os.utime(stamp, (time.time() + 5, time.time() + 5))
    d.wait_log(r"chain reload: done", timeout=30)
    outcomes = load.finish()
    assert outcomes and set(outcomes) == {200}, f"{len(outcomes)} requests: {set(outcomes)}"
    log = d.log()
    steps = re.findall(r"worker (\d) \(pid \d+\) retired \(chain reload\)|chain reload: worker (\d) replaced", log)
    # retired 1, replaced 1, retired 2, replaced 2, ...: never two workers out at once.
    assert [a or b for a, b in steps] == ["1", "1", "2", "2", "3", "3"], steps


def test_add_header_on_every_response_both_protocols(daemon, nginx, app_sock):
    port = free_port()
    d = daemon("--socket", app_sock, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--add-header", "X-Served-By: app1", "--add-header", "Strict-Transport-Security: max-age=63072000",
               ready=[app_sock, ("127.0.0.1", port)])
    n = nginx(f"unix:{app_sock}")
    for url in (f"http://127.0.0.1:{port}/", n.url + "/", n.url + "/raise"):
        r = requests.get(url, timeout=10)
        if r.status_code == 200:
            assert r.headers["X-Served-By"] == "app1"
            assert r.headers["Strict-Transport-Security"] == "max-age=63072000"
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--add-header", "no colon")
    assert out.returncode == 2
    assert ('invalid value "no colon" for option "add-header": expected a header line such as '
            '"X-Served-By: app1"') in out.stderr


def test_socket_timeout_bounds_a_silent_peer(daemon, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APP, "--socket-timeout", "1", ready=app_sock)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(app_sock)
        s.sendall(b"\x00\x10")
        started = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""
        assert time.monotonic() - started < 3
    d.wait_log(r"no complete uwsgi request head after 1 s \(received 2 of the 4 bytes of the uwsgi header\)")


def test_so_keepalive_sets_tcp_keepalive_on_accepted_connections(daemon):
    for extra, expected in (((), False), (("--so-keepalive",), True)):
        port = free_port()
        daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, *extra, ready=("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port)) as s:
            # One request answered on a kept-alive connection: the worker has accepted it.
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")

            def server_side():
                out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                                     capture_output=True, text=True).stdout
                return out if out.strip() else None
            out = wait_for(server_side, 5, "the accepted connection")
            assert ("keepalive" in out) == expected, out


def test_reuse_port_lets_two_daemons_share_a_port(daemon, tmp_path):
    port = free_port()
    http_daemon(daemon, "--reuse-port", port=port)
    http_daemon(daemon, "--reuse-port", port=port)
    # Without it, the second is refused, as before.
    other = free_port()
    http_daemon(daemon, port=other)
    out = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{other}", "--wsgi-file", APP],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "Address already in use" in out.stderr


def test_safe_pidfile_is_written_whole_and_conflicts_with_pidfile(daemon, tmp_path):
    pidfile = tmp_path / "app.pid"
    d, url = http_daemon(daemon, "--safe-pidfile", pidfile, "--vacuum")
    assert pidfile.read_text() == f"{d.pid}\n"
    assert [p.name for p in tmp_path.glob("app.pid*")] == ["app.pid"]
    d.stop()
    assert not pidfile.exists()
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--pidfile", "a", "--safe-pidfile", "b")
    assert out.returncode == 2 and "pidfile and safe-pidfile are both set" in out.stderr


def test_close_on_exec_is_true_of_every_descriptor(daemon, nginx, app_sock):
    """close-on-exec is accepted because it always holds: a program the app starts
    inherits no socket (listening or connected), pipe or file of the daemon's."""
    port = free_port()
    daemon("--socket", app_sock, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
           "--threads", "2", "--close-on-exec", ready=[app_sock, ("127.0.0.1", port)])
    n = nginx(f"unix:{app_sock}")
    for url in (n.url + "/fds", f"http://127.0.0.1:{port}/fds"):
        fds = requests.get(url, timeout=10).text.split()
        # stdin, stdout, stderr, and ls's own handle on /proc/self/fd.
        assert fds == ["0", "1", "2", "3"], f"{url}: {fds}"


def fifo_command(path, letters):
    with open(path, "w") as f:
        f.write(letters)


def test_master_fifo_commands(daemon, nginx, app_sock, tmp_path):
    fifo, second, log = tmp_path / "app.fifo", tmp_path / "other.fifo", tmp_path / "app.log"
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "2", "--lazy-apps", "--vacuum",
                          "--master-fifo", fifo, "--master-fifo", second, "--logto", log)
    master = d.pid
    logged = lambda: log.read_text()

    def worker_pids():  # the daemon logs to its logto file here
        pids = [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", logged())]
        return {p for p in pids if pid_alive(p)}

    wait_for(lambda: len(worker_pids()) == 2, 10, "two workers")
    wait_for(lambda: fifo.is_fifo() and second.is_fifo(), 10, "the fifos")

    fifo_command(fifo, "s")
    wait_for(lambda: re.search(r"worker 2 \(pid \d+\): up \d+ s, (serving|starting), rss \d+ MiB", logged()), 10, "s")

    first = worker_pids()
    load = Load(url)
    fifo_command(fifo, "w")
    wait_for(lambda: logged().count("retired (master fifo w)") == 2, 15, "w")
    fifo_command(fifo, "c")
    wait_for(lambda: "chain reload: done" in logged(), 20, "c")
    fifo_command(fifo, "r")
    wait_for(lambda: "reload: new workers are up" in logged(), 20, "r")
    outcomes = load.finish()
    assert outcomes and set(outcomes) == {200}, f"{len(outcomes)} requests: {set(outcomes)}"
    assert d.proc.poll() is None and d.pid == master
    wait_for(lambda: len(worker_pids()) == 2 and not first & worker_pids(), 10, "new workers")

    # `l` after logrotate moved the file: master and workers write to a new one.
    log.rename(tmp_path / "app.log.1")
    fifo_command(fifo, "l")
    wait_for(lambda: log.exists(), 10, "a new log file")
    requests.get(url + "/raise", timeout=10)
    wait_for(lambda: "the app raised an exception" in log.read_text(), 10, "a worker's line in the new log")

    fifo_command(fifo, "+x")
    wait_for(lambda: "+ and - add and remove workers in cheaper mode: set cheaper" in logged(), 10, "+")
    wait_for(lambda: "unknown command 'x'" in logged(), 10, "x")

    # 1 selects the second fifo: the first is no longer read.
    fifo_command(fifo, "1")
    wait_for(lambda: f'reading "{second}" from now on' in logged(), 10, "1")
    fifo_command(second, "q")
    assert d.wait_exit(20) == 0
    assert "stopping gracefully" in logged()
    assert not fifo.exists() and not second.exists()  # vacuum


def test_attach_daemon_runs_restarts_and_stops_a_sidecar(daemon, tmp_path):
    """A Celery-like sidecar: started with the daemon, restarted when it dies, stopped
    (SIGTERM to its process group) with it, and started afresh on a reload."""
    events = tmp_path / "events"
    sidecar = tmp_path / "sidecar.sh"
    sidecar.write_text(f"""#!/bin/sh
echo "started $$" >> {events}
trap 'echo "stopped $$" >> {events}; exit 0' TERM
while true; do sleep 0.1; done
""")
    sidecar.chmod(0o755)
    d, url = http_daemon(daemon, "--attach-daemon", str(sidecar))

    def started():
        return re.findall(r"started (\d+)", events.read_text()) if events.exists() else []

    first = wait_for(lambda: started(), 10, "the sidecar")[0]
    os.kill(int(first), 9)  # dies: restarted (after a second's throttle: it died young)
    second = wait_for(lambda: started()[1:], 15, "a restarted sidecar")[0]
    d.wait_log(r"attached daemon \(pid \d+\) (was killed by SIGKILL|exited with code 137)")
    # A reload stops it gracefully and the new master image starts it again.
    d.signal(__import__("signal").SIGHUP)
    third = wait_for(lambda: started()[2:], 20, "the sidecar after a reload")[0]
    assert f"stopped {second}" in events.read_text()
    assert pid_of(url)
    d.signal(__import__("signal").SIGTERM)
    assert d.wait_exit(20) == 0
    assert f"stopped {third}" in events.read_text()
    assert not pid_alive(int(third))


def test_smart_attach_daemon_is_watched_through_its_pidfile_and_survives_reloads(daemon, tmp_path):
    pidfile = tmp_path / "bg.pid"
    command = f"sh -c 'sleep 600 & echo $! > {pidfile}'"  # forks into the background
    d, url = http_daemon(daemon, "--smart-attach-daemon", f"{pidfile} {command}")
    pid = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the pidfile")
    d.signal(__import__("signal").SIGHUP)
    d.wait_log(r"reload: new workers are up")
    assert pidfile.read_text().strip() == pid and pid_alive(int(pid)), "left running across the reload"
    os.kill(int(pid), 9)
    wait_for(lambda: pidfile.read_text().strip() != pid, 15, "a new daemon")
    d.wait_log(r"attached daemon gone \(its pidfile names no live process\)")
    new = int(pidfile.read_text().strip())
    d.signal(__import__("signal").SIGTERM)
    assert d.wait_exit(20) == 0
    wait_for(lambda: not pid_alive(new), 5, "the daemon stopped with the master")


def test_attach_daemon2_keys_and_errors(daemon, tmp_path):
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--attach-daemon2", "cmd=x,stopsignal=TERM")
    assert out.returncode == 2
    assert ('invalid value "cmd=x,stopsignal=TERM" for option "attach-daemon2": expected a signal number '
            'for stopsignal (e.g. 15 for SIGTERM)') in out.stderr
    events = tmp_path / "events"
    d, url = http_daemon(daemon, "--attach-daemon2",
                         f"cmd=trap 'echo int >> {events}; exit 0' INT; echo up >> {events}; "
                         f"while true; do sleep 0.1; done,stopsignal=2,chdir={tmp_path}")
    wait_for(lambda: events.exists() and "up" in events.read_text(), 10, "the daemon")
    d.signal(__import__("signal").SIGTERM)
    assert d.wait_exit(20) == 0
    assert "int" in events.read_text(), "stopped with its stopsignal (SIGINT)"


def test_log_maxsize_rotates_the_log_file_for_master_and_workers(daemon, tmp_path):
    log, backup = tmp_path / "app.log", tmp_path / "app.log.old"
    d, url = http_daemon(daemon, "--logto", log, "--log-maxsize", "3000", "--log-backupname", backup)
    with requests.Session() as s:
        for _ in range(40):  # a line each, about 100 bytes
            s.get(url + "/", timeout=10)
    wait_for(lambda: backup.exists(), 10, "the rotated file")
    assert "over log-maxsize = 3000: rotating it to" in log.read_text() + backup.read_text()
    with requests.Session() as s:
        s.get(url + "/after-rotation", timeout=10)
    # The worker writes to the new file, not to the renamed one.
    wait_for(lambda: "GET /after-rotation" in log.read_text(), 10, "a worker's line in the new file")
    assert "GET /after-rotation" not in backup.read_text()


def test_touch_logreopen_reopens_after_logrotate_moved_the_file(daemon, tmp_path):
    log, stamp = tmp_path / "app.log", tmp_path / "logrotate-stamp"
    stamp.write_text("")
    d, url = http_daemon(daemon, "--logto", log, "--touch-logreopen", stamp)
    pid_of(url)
    time.sleep(0.2)  # the master looks at the stamp's time once its workers are up
    log.rename(tmp_path / "app.log.1")
    os.utime(stamp, (time.time() + 5, time.time() + 5))
    wait_for(lambda: log.exists(), 10, "a new log file")
    requests.get(url + "/after-reopen", timeout=10)
    wait_for(lambda: "GET /after-reopen" in log.read_text(), 10, "a worker's line in the new file")
    # Without a log file uWSGI accepts it and does nothing: a note says so.
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--log-maxsize", "1m")
    assert out.returncode == 0
    assert ("note: log-maxsize and touch-logreopen act on a log file, and there is none (no logto or "
            "daemonize): the log goes to stderr, unrotated") in out.stderr


def test_procname_sets_what_ps_and_top_show(daemon, tmp_path):
    def ps(pid):
        args = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
        comm = open(f"/proc/{pid}/comm").read().strip()
        return args, comm

    d, url = http_daemon(daemon, "--processes", "2", "--auto-procname", "--procname-prefix-spaced", "[blog]")
    wait_for(lambda: len(d.worker_pids()) == 2, 10, "two workers")
    assert ps(d.pid) == ("[blog] ngx-wsgi master", "[blog] ngx-wsgi")
    # The title alone, as uWSGI shows it: not followed by the NULs that read as empty
    # arguments (psutil's cmdline()).
    assert command_line(d.pid) == ["[blog] ngx-wsgi master"]
    assert sorted(command_line(p) for p in d.worker_pids()) == [["[blog] ngx-wsgi worker 1"], ["[blog] ngx-wsgi worker 2"]]
    workers = sorted(ps(p)[0] for p in d.worker_pids())
    assert workers == ["[blog] ngx-wsgi worker 1", "[blog] ngx-wsgi worker 2"]
    # The title survives a reload (the new image sets it again) and pgrep finds it.
    d.signal(__import__("signal").SIGHUP)
    d.wait_log(r"reload: new workers are up")
    assert ps(d.pid)[0] == "[blog] ngx-wsgi master"
    # Without the options the command line stays as it was typed.
    d2, _ = http_daemon(daemon)
    assert ps(d2.pid)[0].startswith(BIN)


def test_py_autoreload_reloads_when_an_imported_module_changes(daemon, tmp_path):
    (tmp_path / "devapp.py").write_text("from helper import VERSION\n"
                                        "def application(e, sr):\n"
                                        "    sr('200 OK', [])\n"
                                        "    return [VERSION.encode()]\n")
    helper = tmp_path / "helper.py"
    helper.write_text("VERSION = 'v1'\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--pythonpath", tmp_path, "--module", "devapp",
               "--py-autoreload", "1", ready=("127.0.0.1", port))
    assert requests.get(url + "/", timeout=10).text == "v1"
    time.sleep(1.5)  # the watcher has seen the files once
    helper.write_text("VERSION = 'v2'\n")
    os.utime(helper, (time.time() + 5, time.time() + 5))
    d.wait_log(r'py-autoreload: ".*helper.py" changed: reloading')
    wait_for(lambda: requests.get(url + "/", timeout=10).text == "v2", 20, "the new code")


ECHO_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s %s %s" % (NAME, environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()]
"""


def test_mount_with_manage_script_name_picks_the_longest_prefix(daemon, nginx, tmp_path):
    for name in ("blog", "shop"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(f"NAME = {name!r}\n" + ECHO_APP)
    (tmp_path / "root.py").write_text("NAME = 'root'\n" + ECHO_APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", tmp_path / "root.py",
           "--mount", f"/blog={tmp_path}/blog/app.py", "--mount", f"/blog/shop={tmp_path}/shop/app.py",
           "--mount", f"/api={'modpkg.web:other'}", "--pythonpath", APPS,
           "--manage-script-name", ready=("127.0.0.1", port))
    get = lambda path: requests.get(url + path, timeout=10).text
    assert get("/blog/2024/post") == "blog /blog /2024/post"
    assert get("/blog") == "blog /blog "
    assert get("/blog/shop/cart") == "shop /blog/shop /cart"
    assert get("/blogger") == "root  /blogger", "a prefix matches whole path segments only"
    assert '"callable": "other"' in get("/api/x")
    assert get("/") == "root  /"


def test_mount_without_manage_script_name_follows_nginx_script_name(daemon, nginx, app_sock, tmp_path):
    (tmp_path / "blog.py").write_text("NAME = 'blog'\n" + ECHO_APP)
    daemon("--socket", app_sock, "--mount", f"/blog={tmp_path}/blog.py", ready=app_sock)
    n = nginx(None, directives=f"include /etc/nginx/uwsgi_params; uwsgi_param SCRIPT_NAME /blog; "
                               f"uwsgi_pass unix:{app_sock};")
    assert requests.get(n.url + "/anything", timeout=10).text == "blog /blog /anything"
    # No default app and no match: a 404 that says so (uWSGI answers 500 there).
    n2 = nginx(f"unix:{app_sock}")
    r = requests.get(n2.url + "/x", timeout=10)
    assert (r.status_code, r.text) == (404, "no app is mounted at this path\n")


def test_harakiri_graceful_timeout_lets_the_other_requests_finish(daemon, nginx, app_sock):
    d, url = nginx_daemon(daemon, nginx, app_sock, "--threads", "2", "--harakiri", "1",
                          "--harakiri-graceful-timeout", "3", "--show-config", "--pyargv", "--env prod")
    results = {}

    def fetch(name, path):
        try:
            r = requests.get(url + path, timeout=20)
            results[name] = (r.status_code, r.text)
        except requests.RequestException as err:
            results[name] = type(err).__name__

    stuck = threading.Thread(target=fetch, args=("stuck", "/slow?10"))
    other = threading.Thread(target=fetch, args=("other", "/slow?1.5"))
    stuck.start()
    time.sleep(0.5)
    other.start()
    stuck.join()
    other.join()
    assert results["stuck"][0] == 504
    assert results["other"][0] == 200, "the other request finished before the SIGKILL"
    d.wait_log(r"HARAKIRI: SIGTERM first \(harakiri-graceful-signal\), SIGKILL in 3 s")
    d.wait_log(r"worker 1 \(pid \d+\) was killed by SIGKILL; respawning it")
    # show-config and pyargv, while here.
    assert "show-config: the effective config" in d.log() and "harakiri-graceful-timeout = 3" in d.log()
    assert requests.get(url + "/argv", timeout=10).text == "ngx-wsgi --env prod"


def live_workers(d):
    return len(d.worker_pids())


def test_cheaper_spare_grows_under_load_and_shrinks_after(daemon, nginx, app_sock):
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "4", "--cheaper", "1",
                          "--cheaper-overload", "1", "--cheaper-step", "1")
    wait_for(lambda: live_workers(d) == 1, 10, "one worker to start with")
    outcomes = []

    def client():
        for _ in range(6):
            try:
                outcomes.append(requests.get(url + "/slow?0.5", timeout=30).status_code)
            except requests.RequestException as err:
                outcomes.append(type(err).__name__)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    wait_for(lambda: live_workers(d) >= 3, 20, "more workers under load")
    for c in clients:
        c.join()
    assert set(outcomes) == {200}, outcomes
    d.wait_log(r"cheaper: \d+ of \d+ workers busy: started 1 more")
    wait_for(lambda: live_workers(d) == 1, 30, "back to cheaper = 1 when idle")
    d.wait_log(r"worker \d \(pid \d+\) stopped \(cheaper\)")


def test_cheaper_backlog_follows_the_tcp_listen_queue(daemon, nginx):
    port = free_port()
    d = daemon("--socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "3", "--cheaper", "1",
               "--cheaper-algo", "backlog", "--cheaper-overload", "2", ready=("127.0.0.1", port))
    n = nginx(f"127.0.0.1:{port}")
    threads = [threading.Thread(target=lambda: requests.get(n.url + "/slow?2", timeout=30)) for _ in range(8)]
    for t in threads:
        t.start()
    d.wait_log(r"cheaper: \d+ of 1 workers busy: started 1 more", timeout=15)
    for t in threads:
        t.join()


def test_cheaper_backlog_with_only_unix_sockets_is_warned():
    out = check_config("--socket", "/run/x.sock", "--wsgi-file", APP, "--processes", "4", "--cheaper", "1",
                       "--cheaper-algo", "backlog")
    assert out.returncode == 0
    assert "cheaper-algo = backlog reads the listen queue of TCP sockets, and this config has none" in out.stderr


def test_cheaper_bounds_and_fifo_plus_minus(daemon, nginx, app_sock, tmp_path):
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--processes", "2", "--cheaper", "2")
    assert out.returncode == 2
    assert ("cheaper = 2 is not below processes = 2: cheaper is the fewest workers, processes the most "
            "(uWSGI refuses it too)") in out.stderr
    fifo = tmp_path / "fifo"
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "3", "--cheaper", "1",
                          "--cheaper-overload", "30", "--master-fifo", fifo)
    wait_for(lambda: live_workers(d) == 1 and fifo.is_fifo(), 10, "one worker")
    fifo_command(fifo, "+")
    wait_for(lambda: live_workers(d) == 2, 10, "+ starts one")
    fifo_command(fifo, "++")
    wait_for(lambda: "master fifo +: already at processes = 3" in d.log(), 10, "not above processes")
    assert live_workers(d) == 3
    fifo_command(fifo, "---")
    wait_for(lambda: live_workers(d) == 1, 10, "- stops one, not below cheaper")
    d.wait_log(r"master fifo -: already at cheaper = 1")
    assert requests.get(url + "/", timeout=10).status_code == 200


def test_idle_stops_the_workers_and_a_connection_wakes_them(daemon, nginx, app_sock):
    d, url = nginx_daemon(daemon, nginx, app_sock, "--processes", "2", "--idle", "2")
    assert requests.get(url + "/", timeout=10).status_code == 200
    d.wait_log(r"idle: no request for 2 s: stopping the workers", timeout=15)
    wait_for(lambda: live_workers(d) == 0, 10, "no worker")
    r = requests.get(url + "/", timeout=20)
    assert r.status_code == 200
    d.wait_log(r"idle: a connection came: starting the workers")


def test_a_pidfile_naming_no_daemon_is_never_signalled_and_not_restarted_forever(daemon, tmp_path):
    """A smart daemon's pidfile is not trusted: one that names init (or nothing alive)
    names no daemon; one that never names a live process stops the restarts."""
    pidfile = tmp_path / "stale.pid"
    pidfile.write_text("1\n")
    d, url = http_daemon(daemon, "--smart-attach-daemon", f"{pidfile} true")
    d.wait_log(r"never named a live process 10 s after its start: not starting it again", timeout=20)
    assert d.log().count("attached daemon started") == 1
    d.signal(__import__("signal").SIGTERM)
    assert d.wait_exit(20) == 0


def test_a_replacement_that_cannot_load_the_app_leaves_the_others_serving(daemon, nginx, app_sock, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP.read_text())
    # Both workers have imported the app (lazy-apps) when the daemon says READY=1, as it
    # does to systemd: only then is the file broken.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    d2 = daemon("--socket", app_sock, "--wsgi-file", app, "--processes", "2", "--lazy-apps",
                "--reload-on-exception", env={"NOTIFY_SOCKET": str(tmp_path / "notify")}, ready=app_sock)
    with notify:
        assert b"READY=1" in notify.recv(4096)
    url2 = nginx(f"unix:{app_sock}").url
    app.write_text("this is not python\n")  # a broken deploy
    assert requests.get(url2 + "/raise", timeout=10).status_code == 500
    d2.wait_log(r"could not load the app \(see above\); not respawning it: the other workers go on serving")
    for _ in range(5):
        assert requests.get(url2 + "/", timeout=10).status_code == 200
    assert d2.proc.poll() is None


def test_lingering_close_outlives_a_retiring_worker(daemon, nginx, app_sock):
    """reload-on-exception retires the worker right after a request whose body it did not
    read: the answer still reaches the client (the lingering close is waited for)."""
    daemon("--socket", app_sock, "--wsgi-file", APPS / "early_answer.py", "--reload-on-exception",
           ready=app_sock)
    n = nginx(f"unix:{app_sock}", location_extra="client_max_body_size 100m;")
    for _ in range(10):
        r = requests.post(n.url + "/raise", data=b"x" * (16 << 20), timeout=60)
        assert r.status_code == 500, r.status_code
