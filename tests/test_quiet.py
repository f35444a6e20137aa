"""Quiet when nothing is wrong: a health check's connect-then-close logs nothing, and
reloads and stops under load with kept-alive connections leave neither failed requests
nor errors in nginx's log for requests that then succeed."""

import signal
import socket
import threading
import time

import requests

from conftest import APPS, free_port, wait_for

APP = APPS / "pep3333.py"


def test_a_health_checks_connect_then_close_logs_nothing(daemon, tmp_path):
    port, http_port = free_port(), free_port()
    sock = str(tmp_path / "app.sock")
    d = daemon("--socket", sock, "--socket", f"127.0.0.1:{port}", "--http-socket", f"127.0.0.1:{http_port}",
               "--wsgi-file", APP, ready=[sock, ("127.0.0.1", port), ("127.0.0.1", http_port)])
    for _ in range(3):
        for family, addr in ((socket.AF_UNIX, sock), (socket.AF_INET, ("127.0.0.1", port)),
                             (socket.AF_INET, ("127.0.0.1", http_port))):
            with socket.socket(family) as s:
                s.connect(addr)
    # A request after them, so their handling is over when we read the log.
    assert requests.get(f"http://127.0.0.1:{http_port}/echo", timeout=5).status_code == 200
    wait_for(lambda: "GET /echo" in d.log(), 5, "the request's line")
    noisy = [line for line in d.log().splitlines()
             if ("[error]" in line or "[warn]" in line) and "running as root" not in line]
    assert noisy == []


def test_workers_replaced_under_kept_alive_load_leave_nginx_quiet(daemon, nginx, tmp_path):
    """Reloads (SIGHUP), chain reloads and max-requests recycling while six clients keep
    nginx's kept-alive connections busy: a replaced worker hands its idle connections to
    the others instead of closing them under nginx (which would answer a POST sent on
    one with 502, and log recv() failed for a GET it then retries)."""
    sock = tmp_path / "app.sock"
    ini = tmp_path / "app.ini"
    chain = tmp_path / "chain"
    chain.write_text("0")
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nwsgi-file = {APP}\nprocesses = 2\nthreads = 2\n"
                   f"disable-logging = true\nmax-requests = 150\nlazy-apps = true\ntouch-chain-reload = {chain}\n")
    d = daemon(ini, ready=str(sock))
    n = nginx(None, module=True, directives=f"wsgi_app {ini};")
    results, stop = [], threading.Event()

    def hammer(post):
        session = requests.Session()
        while not stop.is_set():
            if post:
                r = session.post(f"{n.url}/echo", data=b"p" * 3000, timeout=10)
                results.append(r.status_code if r.content == b"p" * 3000 else (r.status_code, r.content[:100], len(r.content)))
            else:
                results.append(session.get(f"{n.url}/echo", timeout=10).status_code)

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        for reload in range(3):
            time.sleep(0.7)
            d.signal(signal.SIGHUP)
            wait_for(lambda: d.log().count("reload: new workers are up") > reload, 15, "the reload")
        time.sleep(0.5)
        chain.write_text("1")
        wait_for(lambda: "chain reload: done" in d.log(), 15,
                 "the chain reload")
        time.sleep(0.7)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(results) > 200
    assert "max-requests" in d.log(), "workers were recycled under load"
    assert all(status == 200 for status in results), [s for s in results if s != 200][:5]
    errors = [line for line in n.error_log().splitlines() if "[error]" in line or "[alert]" in line]
    assert errors == [], errors[:5]
