"""`stats`: the master serves uWSGI's stats JSON, with the keys real uWSGI (pyuwsgi) serves,
so uwsgitop and dashboards built for uWSGI read it."""

import json
import socket
import subprocess

import requests

from conftest import APPS, VENV, free_port, wait_for


def read_stats(addr):
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(5)
        s.connect(addr)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def keys(stats):
    worker = stats["workers"][0]
    return (set(stats), set(worker), set(worker["cores"][0]), set(worker["apps"][0]), set(stats["sockets"][0]))


def wait_stats(addr):
    """The stats JSON on `addr`, once the server there listens."""
    def stats():
        try:
            return json.loads(read_stats(addr))
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # not listening yet

    return wait_for(stats, 15, f"stats on {addr}")


def uwsgi_stats(tmp_path, *options):
    """The stats JSON of real uWSGI (pyuwsgi) serving pep3333.py with `options`."""
    sock, stats = str(tmp_path / "uwsgi.sock"), str(tmp_path / "uwsgi-stats.sock")
    proc = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--master", "--socket", sock, "--wsgi-file",
                             str(APPS / "pep3333.py"), *map(str, options), "--stats", stats],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return wait_stats(stats)
    finally:
        proc.kill()
        proc.wait()


def uwsgi_stats_keys(tmp_path):
    return keys(uwsgi_stats(tmp_path, "--processes", "2", "--threads", "2"))


def test_stats_json_has_uwsgis_keys_and_counts_requests(daemon, tmp_path):
    port, stats_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--processes", "2",
               "--threads", "2", "--stats", f"127.0.0.1:{stats_port}", "--disable-logging",
               ready=("127.0.0.1", port))
    for _ in range(10):
        assert requests.get(f"{url}/big?kib=1").ok
    assert requests.get(f"{url}/error").status_code == 500
    stats = json.loads(read_stats(("127.0.0.1", stats_port)))
    assert keys(stats) == uwsgi_stats_keys(tmp_path)
    workers = stats["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(d.worker_pids())
    assert sum(w["requests"] for w in workers) == 11
    assert sum(sum(c["requests"] for c in w["cores"]) for w in workers) == 11
    assert sum(w["exceptions"] for w in workers) == 1
    assert sum(w["tx"] for w in workers) >= 10 * 1024
    assert all(w["status"] == "idle" and w["accepting"] == 1 and w["respawn_count"] == 1 for w in workers)
    assert all(w["rss"] > 1 << 20 and len(w["cores"]) == 2 for w in workers)
    assert stats["pid"] == d.pid
    assert stats["sockets"][0]["name"] == f"127.0.0.1:{port}"


def test_stats_on_a_unix_socket_as_http_sees_busy_workers(daemon, tmp_path):
    port, stats_sock = free_port(), str(tmp_path / "stats.sock")
    url = f"http://127.0.0.1:{port}"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--stats", stats_sock,
           "--stats-http", ready=("127.0.0.1", port))
    import threading
    slow = threading.Thread(target=lambda: requests.get(f"{url}/sleep?seconds=1.5"))
    slow.start()
    try:
        def busy():
            raw = read_stats(stats_sock)
            head, body = raw.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.0 200 OK")
            stats = json.loads(body)
            return stats["workers"][0]["status"] == "busy" and stats["load"] == 1 and stats
        wait_for(busy, 5, "a busy worker in the stats")
    finally:
        slow.join()


def test_stats_survive_every_reload_and_report_the_listen_queue(daemon, tmp_path):
    port, stats_port = free_port(), free_port()
    d = daemon("--socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--stats", f"127.0.0.1:{stats_port}", ready=("127.0.0.1", port))
    for reload in range(1, 4):
        wait_for(lambda: json.loads(read_stats(("127.0.0.1", stats_port))), 10, "stats")
        d.signal(__import__("signal").SIGHUP)
        wait_for(lambda: d.log().count("reload: new workers are up") == reload, 20, f"reload {reload}")
        stats = json.loads(read_stats(("127.0.0.1", stats_port)))
        assert stats["pid"] == d.pid
    assert "serving without stats" not in d.log() and "Address already in use" not in d.log()
    # Connections waiting to be accepted show in the listen queue: a worker stopped with
    # SIGSTOP cannot accept them.
    pid = d.worker_pids()[0]
    os = __import__("os")
    os.kill(pid, __import__("signal").SIGSTOP)
    try:
        waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        stats = json.loads(read_stats(("127.0.0.1", stats_port)))
        assert stats["listen_queue"] == 3 and stats["sockets"][0]["queue"] == 3
    finally:
        os.kill(pid, __import__("signal").SIGCONT)
    for s in waiting:
        s.close()


def test_running_as_root_without_uid_is_warned(daemon, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    assert "running as root: the app's code runs as root too; set uid (and gid)" in d.log()
    d2 = daemon("--socket", app_sock + "2", "--wsgi-file", APPS / "pep3333.py", "--uid", "nobody",
                "--gid", "nogroup", "--chdir", "/", ready=app_sock + "2")
    assert "running as root" not in d2.log()


def test_prometheus_metrics_with_stats_http(daemon, tmp_path):
    """`GET /metrics` on the stats socket (stats-http): the Prometheus text format, read
    with prometheus_client's own parser; `GET /` and uwsgitop's bare connection still get
    the JSON."""
    from prometheus_client.parser import text_string_to_metric_families

    port, stats_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--processes", "2",
               "--stats", f"127.0.0.1:{stats_port}", "--stats-http", ready=("127.0.0.1", port))
    for _ in range(6):
        assert requests.get(f"{url}/echo").status_code == 200
    assert requests.get(f"{url}/no-such-page").status_code == 404
    assert requests.get(f"{url}/excinfo").status_code == 500  # the app's own 500
    assert requests.get(f"{url}/error").status_code == 500  # the app raised
    assert requests.get(f"{url}/sleep?seconds=0.3").status_code == 200

    def scrape():
        r = requests.get(f"http://127.0.0.1:{stats_port}/metrics", timeout=5)
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    def total(families, name, sample_name=None, **labels):
        return sum(s.value for s in families[name].samples
                   if (sample_name is None or s.name == sample_name)
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    # The last request's counters land after its response: wait for them.
    metrics = wait_for(lambda: (m := scrape()) and total(m, "ngx_wsgi_request_duration_seconds",
                                                          "ngx_wsgi_request_duration_seconds_count") == 10 and m,
                       5, "ten requests counted")
    assert metrics["ngx_wsgi_requests"].type == "counter"
    assert total(metrics, "ngx_wsgi_requests", status="2xx") == 7
    assert total(metrics, "ngx_wsgi_requests", status="4xx") == 1
    assert total(metrics, "ngx_wsgi_requests", status="5xx") == 2
    assert total(metrics, "ngx_wsgi_exceptions") == 1
    assert total(metrics, "ngx_wsgi_harakiri") == 0
    assert total(metrics, "ngx_wsgi_sent_bytes") > 0
    histogram = metrics["ngx_wsgi_request_duration_seconds"]
    assert histogram.type == "histogram"
    # One request took 0.3 s: below the 0.25 s bound there are 9, below 0.5 s all 10.
    assert total(metrics, "ngx_wsgi_request_duration_seconds", "ngx_wsgi_request_duration_seconds_bucket",
                 le="0.25") == 9
    assert total(metrics, "ngx_wsgi_request_duration_seconds", "ngx_wsgi_request_duration_seconds_bucket",
                 le="0.5") == 10
    assert total(metrics, "ngx_wsgi_request_duration_seconds", "ngx_wsgi_request_duration_seconds_sum") >= 0.3
    rss = {s.labels["worker"]: s.value for s in metrics["ngx_wsgi_worker_rss_bytes"].samples}
    assert set(rss) == {"1", "2"} and all(v > 1_000_000 for v in rss.values())
    assert total(metrics, "ngx_wsgi_worker_up") == 2
    assert total(metrics, "ngx_wsgi_worker_busy_threads") == 0
    assert total(metrics, "ngx_wsgi_worker_spawns") == 2
    assert [s.labels["socket"] for s in metrics["ngx_wsgi_listen_queue"].samples] == [f"127.0.0.1:{port}"]
    # The JSON is still there for uwsgitop and exporters.
    assert requests.get(f"http://127.0.0.1:{stats_port}/", timeout=5).json()["pid"] == d.pid
    raw = read_stats(("127.0.0.1", stats_port))
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["pid"] == d.pid
