"""Point 4: processes, threads, lazy-apps, respawn, and the signal contract:
SIGTERM graceful stop, SIGINT/SIGQUIT fast stop, SIGHUP graceful reload."""

import concurrent.futures
import os
import signal
import threading
import time

import pytest
import requests

from conftest import APPS, BIN, can_connect, check_config, free_port, wait_for


def http_daemon(daemon, *args, env=None):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", *args, env=env, ready=("127.0.0.1", port))
    wait_for(d.worker_pids, 5, "workers")
    return d, f"http://127.0.0.1:{port}"


def test_processes_share_the_load(daemon, nginx, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--processes", "3", ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    wait_for(lambda: len(d.worker_pids()) == 3, 5, "3 workers")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        pids = set(pool.map(lambda _: requests.get(f"{n.url}/sleep?seconds=0.3").text, range(6)))
    assert len(pids) >= 2 and pids <= {str(p) for p in d.worker_pids()}


def test_threads_serve_concurrently_in_one_process(daemon):
    """Four 1-second requests on one worker with four threads: the GIL is released while
    each sleeps, so they overlap (serially they would take 4 s). Each thread takes one
    connection: a thread takes the next only once the request of the one it took is in,
    so two arriving together never queue on one thread (which took 2 s here, one run in
    three, before)."""
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "pep3333.py", "--threads", "4")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        pids = set(pool.map(lambda _: requests.get(f"{url}/sleep?seconds=1").text, range(4)))
    assert time.monotonic() - started < 1.9
    assert len(pids) == 1
    env = requests.get(f"{url}/environ").json()
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False


def test_one_thread_serves_one_request_at_a_time(daemon):
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "pep3333.py")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: requests.get(f"{url}/sleep?seconds=0.5").text, range(2)))
    assert time.monotonic() - started >= 1.0


def thread_policies(pid):
    """{thread id: (thread name, scheduling policy)} of every thread of PID."""
    policies = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as f:
            policies[int(task)] = (f.read().strip(), os.sched_getscheduler(int(task)))
    return policies


# The default (auto) behind nginx (a uwsgi socket) with one request thread, and with
# only an HTTP listener; forced on and off; auto with more request threads than the cores
# the daemon may run on.
@pytest.mark.parametrize("uwsgi_socket, setting, processes, threads, batch", [
    (True, None, 1, 1, True),
    (False, None, 1, 1, False),
    (True, "true", 2, 2, True),
    (False, "true", 1, 1, True),
    (True, "false", 1, 2, False),
    (True, "auto", 1, len(os.sched_getaffinity(0)) + 1, False),
])
def test_sched_batch_puts_the_request_threads_and_only_them_under_sched_batch(
        daemon, tmp_path, uwsgi_socket, setting, processes, threads, batch):
    """What `chrt -p` shows: every worker's request threads (its main thread and
    request-N) under SCHED_BATCH or not, as sched-batch says; the master and the workers'
    other threads (harakiri, signals) keep the normal policy whatever it says."""
    args = ["--wsgi-file", APPS / "pep3333.py", "--processes", processes, "--threads", threads]
    if uwsgi_socket:
        args += ["--socket", tmp_path / "app.sock"]
    if setting is not None:
        args.append(f"--sched-batch={setting}")
    d, url = http_daemon(daemon, *args)
    assert requests.get(f"{url}/pid").status_code == 200
    request_policy = os.SCHED_BATCH if batch else os.SCHED_OTHER

    def request_threads(worker, threads_seen):
        return {tid for tid, (name, _) in threads_seen.items() if tid == worker or name.startswith("request-")}

    def settled():
        """Every worker up with its request threads started (each sets its own policy)."""
        workers = d.worker_pids()
        if len(workers) != processes:
            return False
        for worker in workers:
            seen = thread_policies(worker)
            mine = request_threads(worker, seen)
            if len(mine) != threads or any(seen[tid][1] != request_policy for tid in mine):
                return False
        return True

    wait_for(settled, 10, f"{processes} workers whose {threads} request threads have policy {request_policy}: "
             + str({w: thread_policies(w) for w in d.worker_pids()}))
    assert {policy for _, policy in thread_policies(d.pid).values()} == {os.SCHED_OTHER}
    said = "request threads run under SCHED_BATCH (sched-batch" + (
        " = auto: a uwsgi socket, and no more request threads than cores)" if setting in (None, "auto") else ")")
    assert (said in d.log()) == batch, d.log()
    for worker in d.worker_pids():
        threads_seen = thread_policies(worker)
        others = set(threads_seen) - request_threads(worker, threads_seen)
        for tid in others:
            name, policy = threads_seen[tid]
            if name != "idle-mover":  # the mover runs under SCHED_IDLE, by design
                assert policy == os.SCHED_OTHER, (name, threads_seen)


@pytest.mark.skipif(os.geteuid() != 0, reason="moving from SCHED_IDLE to SCHED_BATCH takes root (or RLIMIT_NICE)")
def test_sched_batch_leaves_the_policy_the_daemon_was_started_with(daemon):
    """Started under `chrt --idle 0` (or systemd's CPUSchedulingPolicy=), every thread of
    every process keeps that policy, even with sched-batch on: as root the daemon could
    move them to SCHED_BATCH."""
    port = free_port()
    d = daemon("--idle", "0", BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py",
               "--threads", "2", "--sched-batch=true", binary="chrt", ready=("127.0.0.1", port))
    wait_for(d.worker_pids, 5, "workers")
    wait_for(lambda: any(name == "request-1" for name, _ in thread_policies(d.worker_pids()[0]).values()),
             5, "the second request thread")
    assert requests.get(f"http://127.0.0.1:{port}/pid").status_code == 200
    for pid in [d.pid, *d.worker_pids()]:
        policies = thread_policies(pid)
        assert {policy for _, policy in policies.values()} == {os.SCHED_IDLE}, policies
    assert "sched-batch: the request threads keep the scheduling policy the daemon was started with" in d.log()


def test_sched_batch_refuses_a_value_it_does_not_know():
    out = check_config("--http-socket", ":0", "--wsgi-file", APPS / "pep3333.py", "--sched-batch=sometimes")
    assert out.returncode == 2
    assert ('invalid value "sometimes" for option "sched-batch": expected auto, true or false '
            '(or no value: true)') in out.stderr


@pytest.mark.parametrize("lazy", [False, True])
def test_lazy_apps_load_in_each_worker(daemon, lazy):
    args = ["--module", "modpkg.web", "--chdir", APPS, "--processes", "2"] + (["--lazy-apps"] if lazy else [])
    d, url = http_daemon(daemon, *args)
    info = requests.get(f"{url}/").json()
    if lazy:
        assert info["loaded_in_pid"] == info["serving_pid"]
    else:
        assert info["loaded_in_pid"] == d.pid, "loaded once in the master, then forked"


def test_dead_worker_is_respawned_and_logged(daemon):
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "pep3333.py")
    old = d.worker_pids()[0]
    os.kill(old, signal.SIGKILL)
    d.wait_log(rf"worker 1 \(pid {old}\) was killed by SIGKILL; respawning it")
    new = wait_for(lambda: [p for p in d.worker_pids() if p != old], 5, "a new worker")
    assert requests.get(f"{url}/pid").text == str(new[0])


def test_sigterm_finishes_in_flight_requests_then_exits(daemon, nginx, app_sock):
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--processes", "2", ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(requests.get, f"{n.url}/sleep?seconds=1.5") for _ in range(2)]
        time.sleep(0.5)
        d.signal(signal.SIGTERM)
        responses = [f.result() for f in slow]
    assert [r.status_code for r in responses] == [200, 200]
    assert d.wait_exit(10) == 0
    assert "SIGTERM: stopping gracefully" in d.log()
    assert "respawning" not in d.log()
    assert not can_connect(app_sock)


def test_sigint_stops_at_once(daemon):
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "pep3333.py")
    def hanging_request():
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{url}/sleep?seconds=30")

    threading.Thread(target=hanging_request, daemon=True).start()
    time.sleep(0.3)
    started = time.monotonic()
    d.signal(signal.SIGINT)
    d.wait_exit(5)
    assert time.monotonic() - started < 3
    assert not [p for p in d.worker_pids()], "no worker left behind"


def test_sigterm_to_the_whole_group_does_not_respawn(daemon):
    """systemd's default KillMode signals every process of the service at once."""
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "pep3333.py", "--processes", "2")
    os.killpg(d.pid, signal.SIGTERM)
    assert d.wait_exit(10) == 0
    assert "respawning" not in d.log()


def test_sighup_reloads_new_code_without_dropping_a_request(daemon, nginx, app_sock, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "versioned.py", "--processes", "2",
               env={"VERSION_FILE": str(version)}, ready=app_sock)
    n = nginx(f"unix:{app_sock}")
    old_workers = set(wait_for(lambda: len(d.worker_pids()) == 2 and d.worker_pids(), 5, "workers"))
    assert requests.get(f"{n.url}/").text.startswith("v1 ")

    results, stop = [], threading.Event()

    def hammer():
        session = requests.Session()
        while not stop.is_set():
            r = session.get(f"{n.url}/")
            results.append((r.status_code, r.text.split()[0]))

    slow = concurrent.futures.ThreadPoolExecutor(1).submit(requests.get, f"{n.url}/slow")
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    version.write_text("v2")
    d.signal(signal.SIGHUP)
    d.wait_log("reload: new workers are up")
    wait_for(lambda: results and results[-1][1] == "v2", 10, "the new version to serve")
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert slow.result().status_code == 200, "the in-flight request of an old worker finished"
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    assert len(results) > 50
    wait_for(lambda: not old_workers & set(d.worker_pids()), 10, "the old workers to exit")
    assert d.proc.poll() is None, "same master pid keeps running"


def test_reload_with_a_broken_app_keeps_the_old_workers(daemon, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    d, url = http_daemon(daemon, "--wsgi-file", APPS / "versioned.py", env={"VERSION_FILE": str(version)})
    version.write_text("broken")
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused: the new config or the app does not load")
    assert "this version of the app does not import" in d.log()
    assert requests.get(f"{url}/").text.startswith("v1 ")


def test_pidfile_and_vacuum(daemon, tmp_path):
    pidfile, sock = tmp_path / "app.pid", str(tmp_path / "v.sock")
    d = daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", "--pidfile", pidfile, "--vacuum", ready=sock)
    assert pidfile.read_text().strip() == str(d.pid)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
    assert not pidfile.exists() and not os.path.exists(sock)


def test_sigterm_during_a_slow_import_stops_cleanly(daemon, app_sock, tmp_path):
    pidfile = tmp_path / "slow.pid"
    d = daemon("--socket", app_sock, "--wsgi-file", APPS / "slow_import.py", "--pidfile", pidfile, "--vacuum",
               ready=app_sock)
    d.signal(signal.SIGTERM)  # the master is still importing the app
    assert d.wait_exit(10) == 0
    assert not pidfile.exists() and not os.path.exists(app_sock)
