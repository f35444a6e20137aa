"""The spooler: @spool tasks are files in the spooler directory, run by spooler processes
the master starts, through the app's own uwsgidecorators functions. Nothing spooled is
lost to a crash or a restart; a file that is not a task is moved aside and said so."""

import os
import re
import signal
import time

import requests

from conftest import APPS, free_port, get_json, json_records, pid_alive, wait_for

APP = APPS / "spool_app.py"


def start(daemon, tmp_path, *extra, spool_dir=None):
    port = free_port()
    spool_dir = spool_dir or tmp_path / "spool"
    spool_dir.mkdir(exist_ok=True)
    record = tmp_path / "record.jsonl"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--spooler", spool_dir,
               "--env", f"SPOOL_RECORD={record}", *extra, ready=("127.0.0.1", port))
    return d, f"http://127.0.0.1:{port}", spool_dir, record



def spooler_pids(d):
    """The spooler processes' pids, in the order they started."""
    return [int(p) for p in re.findall(r"spooler \d started \(pid (\d+)\)", d.log())]


def tasks_in(spool_dir):
    return sorted(p for p in spool_dir.rglob("uwsgi_spoolfile_on_*") if "broken" not in p.parts)


def test_a_spooled_task_runs_in_the_spooler_with_its_arguments(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path, "--processes", "2")
    status, task = get_json(url, "/plain?x=hello&n=3")
    assert status == 200
    # spool() returns the task's file, in the spooler directory.
    assert task.startswith(f"{spool_dir}/uwsgi_spoolfile_on_")
    wait_for(lambda: json_records(record, "plain"), 10, "the task to run")
    (ran,) = json_records(record, "plain")
    # The function got the task's vars (bytes, as uWSGI gives them: decoded here) ...
    assert ran["args"]["x"] == "hello" and ran["args"]["n"] == "3"
    assert ran["args"]["ud_spool_func"] == "plain"
    assert ran["task_name"] == task
    # ... in the spooler process, not a worker.
    assert ran["spooler"] is True
    assert ran["pid"] not in d.worker_pids()
    wait_for(lambda: not tasks_in(spool_dir), 5, "the done task's file to go")
    # The spooler ran the app's @postfork too (an app reconnects its database there).
    assert [r["pid"] for r in json_records(record, "postfork")] == [ran["pid"]]
    assert "spooler: task" in d.log() and "done in" in d.log()


def test_pass_arguments_and_a_body_reach_the_function(daemon, tmp_path):
    _, url, _, record = start(daemon, tmp_path)
    assert get_json(url, "/args")[0] == 200
    assert get_json(url, "/body")[0] == 200
    wait_for(lambda: json_records(record, "with_args") and len(json_records(record, "plain")) == 1, 10, "both tasks")
    (ran,) = json_records(record, "with_args")
    assert (ran["a"], ran["b"], ran["c"]) == (1, [2, "three"], {"d": 4.5})
    (with_body,) = json_records(record, "plain")
    # The body travels whole, after the vars: bytes (hex here), not text.
    assert with_body["args"]["body"] == b"\x00\xffraw".hex()
    assert with_body["args"]["x"] == "with body"


def test_a_task_survives_sigkill_of_the_whole_daemon_and_runs_exactly_once(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path)
    # Due in 2 s: it is on disk, not yet run, when every process is killed.
    status, task = get_json(url, "/plain?x=survivor&at_in=2")
    assert status == 200 and os.path.exists(task)
    os.killpg(d.pid, signal.SIGKILL)
    d.proc.wait()
    assert json_records(record, "plain") == []
    assert tasks_in(spool_dir) == [tmp_path / "spool" / os.path.basename(task)]
    # Restarted (systemd's Restart=on-failure does this): the task runs, once.
    d2, _, _, _ = start(daemon, tmp_path)
    wait_for(lambda: json_records(record, "plain"), 10, "the task to run after the restart")
    time.sleep(2)
    assert [r["args"]["x"] for r in json_records(record, "plain")] == ["survivor"]
    assert tasks_in(spool_dir) == []


def test_a_task_whose_spooler_is_killed_mid_run_runs_again(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path)
    get_json(url, "/slow?name=interrupted&seconds=3")
    spooler = int(d.wait_log(r"spooler 1 started \(pid (\d+)\)").group(1))
    wait_for(lambda: tasks_in(spool_dir), 5, "the task file")
    time.sleep(1)  # running now
    os.kill(spooler, signal.SIGKILL)
    d.wait_log(r"spooler 1 \(pid \d+\) was killed by SIGKILL; respawning it")
    wait_for(lambda: json_records(record, "slow"), 15, "the task to run again")
    assert [r["name"] for r in json_records(record, "slow")] == ["interrupted"]
    assert json_records(record, "slow")[0]["pid"] != spooler


def test_retry_and_exceptions_run_the_task_again_until_spool_ok(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path, "--spooler-frequency", "1")
    get_json(url, "/flaky?key=k")
    wait_for(lambda: len(json_records(record, "flaky")) == 3, 15, "three runs")
    assert [r["run"] for r in json_records(record, "flaky")] == [1, 2, 3]
    wait_for(lambda: not tasks_in(spool_dir), 5, "the task file to go after SPOOL_OK")
    log = d.log()
    assert "returned SPOOL_RETRY: it runs again at the next scan" in log
    # The exception is logged with its traceback, and the task kept.
    assert "RuntimeError: the mail server is down" in log and "raised:" in log
    time.sleep(1.5)
    assert len(json_records(record, "flaky")) == 3


def test_spoolforever_keeps_its_task(daemon, tmp_path):
    _, url, spool_dir, record = start(daemon, tmp_path, "--spooler-frequency", "1")
    get_json(url, "/forever")
    wait_for(lambda: len(json_records(record, "forever")) >= 2, 10, "two runs")
    assert len(tasks_in(spool_dir)) == 1


def test_a_file_that_is_not_a_task_is_moved_aside_not_retried(daemon, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    junk = spool_dir / "uwsgi_spoolfile_on_junk"
    junk.write_bytes(b"GET / HTTP/1.1\r\n\r\n")
    truncated = spool_dir / "uwsgi_spoolfile_on_truncated"
    truncated.write_bytes(b"\x11\x40\x00\x00\x01\x00a")
    other = spool_dir / "notes.txt"
    other.write_text("not ours: left alone")
    d, url, _, record = start(daemon, tmp_path, "--spooler-frequency", "1", spool_dir=spool_dir)
    d.wait_log(r"uwsgi_spoolfile_on_junk is not a task \(modifier1 is 71, not 17 \(a spool packet\)\): "
               r"moved to .*/spool/broken/uwsgi_spoolfile_on_junk")
    d.wait_log(r"uwsgi_spoolfile_on_truncated is not a task \(the header announces 64 bytes of vars, "
               r"the file has 3 after it\)")
    assert (spool_dir / "broken" / "uwsgi_spoolfile_on_junk").read_bytes() == b"GET / HTTP/1.1\r\n\r\n"
    assert not junk.exists() and other.read_text() == "not ours: left alone"
    # A good task next to them runs; the broken ones are not tried again.
    get_json(url, "/plain?x=fine")
    wait_for(lambda: json_records(record, "plain"), 10, "the good task")
    time.sleep(2)
    assert d.log().count("is not a task") == 2


def test_at_priority_and_order(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path)
    # One spooler process, busy for 1.5 s: the next three wait, then run by priority.
    get_json(url, "/slow?name=first&seconds=1.5")
    time.sleep(0.5)  # the spooler has taken it
    get_json(url, "/plain?x=none")
    get_json(url, "/plain?x=p9&priority=9")
    get_json(url, "/plain?x=p1&priority=1")
    assert (spool_dir / "9").is_dir() and (spool_dir / "1").is_dir()
    wait_for(lambda: len(json_records(record, "plain")) == 3, 15, "three tasks")
    assert [r["args"]["x"] for r in json_records(record, "plain")] == ["p1", "p9", "none"]
    # at: not before its time.
    asked = time.time()
    get_json(url, "/plain?x=later&at_in=2")
    wait_for(lambda: len(json_records(record, "plain")) == 4, 10, "the task with at")
    assert json_records(record, "plain")[-1]["time"] >= asked + 2 - 0.01


def test_several_spooler_processes_run_each_task_once(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path, "--spooler-processes", "3", "--processes", "2",
                                      "--threads", "4")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: get_json(url, f"/plain?x={i}"), range(60)))
    wait_for(lambda: len(json_records(record, "plain")) >= 60, 20, "60 tasks")
    time.sleep(1)
    xs = sorted(int(r["args"]["x"]) for r in json_records(record, "plain"))
    assert xs == list(range(60))
    assert "spooler 3 started" in d.log()
    assert tasks_in(spool_dir) == []


def test_spooler_max_tasks_replaces_the_process(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path, "--spooler-max-tasks", "2")
    for i in range(5):
        get_json(url, f"/plain?x={i}")
    wait_for(lambda: len(json_records(record, "plain")) == 5, 15, "5 tasks")
    pids = [r["pid"] for r in json_records(record, "plain")]
    assert len(set(pids)) == 3, pids
    assert "spooler-max-tasks: ran 2 tasks: exiting, to be replaced" in d.log()
    assert re.search(r"spooler 1 \(pid \d+\) retired itself \(reason above\); starting its replacement",
                                   d.log())


def test_the_api_around_the_spooler(daemon, tmp_path):
    d, url, spool_dir, _ = start(daemon, tmp_path, "--spooler-processes", "2")
    _, task = get_json(url, "/plain?x=later&at_in=30")
    status, info = get_json(url, "/info")
    assert info["jobs"] == [task]
    spoolers = spooler_pids(d)
    assert sorted(info["pids"]) == sorted(spoolers) and info["pid"] == spoolers[0]
    assert info["i_am_the_spooler"] is None
    # What a caller does wrong, and what it sees.
    status, err = get_json(url, "/bad_value")
    assert status == 500 and err.startswith("TypeError: uwsgi.spool(): the value of 'n' is a object: pass str or bytes")
    status, err = get_json(url, "/raw?spooler=/elsewhere&x=1")
    assert status == 500 and err == f"ValueError: /elsewhere is not one of this daemon's spoolers ({spool_dir})"
    status, err = get_json(url, "/raw?priority=high&x=1")
    assert status == 500 and "priority must be a whole number" in err


def test_without_a_spooler_spool_says_so(daemon, tmp_path):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--env",
           f"SPOOL_RECORD={tmp_path / 'r'}", ready=("127.0.0.1", port))
    status, err = get_json(f"http://127.0.0.1:{port}", "/plain?x=1")
    assert (status, err) == (500, "ValueError: no spooler is configured (set spooler = DIR)")


def test_a_missing_spooler_directory_stops_the_start(daemon, tmp_path):
    d = daemon("--socket", tmp_path / "s.sock", "--wsgi-file", APP, "--spooler", tmp_path / "nope",
               "--env", f"SPOOL_RECORD={tmp_path / 'r'}")
    assert d.wait_exit() != 0
    assert f"spooler {tmp_path / 'nope'}: no such directory" in d.log()


def test_a_reload_lets_the_running_task_finish_and_loses_nothing(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path, "--lazy-apps")
    get_json(url, "/slow?name=during-reload&seconds=2")
    time.sleep(0.7)
    d.signal(signal.SIGHUP)
    d.wait_log("reload: new workers are up")
    wait_for(lambda: _up(url), 15, "the reloaded daemon")
    for i in range(3):
        get_json(url, f"/plain?x=after-{i}")
    wait_for(lambda: len(json_records(record, "plain")) == 3 and json_records(record, "slow"), 20, "every task")
    assert [r["name"] for r in json_records(record, "slow")] == ["during-reload"]
    time.sleep(1)
    assert len(json_records(record, "plain")) == 3 and tasks_in(spool_dir) == []


def _up(url):
    try:
        return requests.get(url + "/info", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_stop_lets_the_running_task_finish(daemon, tmp_path):
    d, url, spool_dir, record = start(daemon, tmp_path)
    get_json(url, "/slow?name=at-stop&seconds=1.5")
    time.sleep(0.7)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
    assert [r["name"] for r in json_records(record, "slow")] == ["at-stop"]
    assert tasks_in(spool_dir) == []
    assert not any(pid_alive(p) for p in [r["pid"] for r in json_records(record)])


def test_the_stats_list_spoolers_as_uwsgi_does(daemon, tmp_path):
    """uwsgitop and dashboards read `spoolers` from the stats JSON: the same entries as
    real uWSGI's (pyuwsgi, same options), counting tasks, running and respawns."""
    from test_stats import uwsgi_stats, wait_stats
    theirs_dir = tmp_path / "uwsgi-spool"
    theirs_dir.mkdir()
    theirs = uwsgi_stats(tmp_path, "--spooler", theirs_dir, "--spooler-processes", "2")["spoolers"]

    ours_stats = str(tmp_path / "stats.sock")
    d, url, spool_dir, record = start(daemon, tmp_path, "--spooler-processes", "2", "--stats", ours_stats)
    get_json(url, "/slow?name=counted&seconds=1")
    wait_for(lambda: any(s["running"] for s in wait_stats(ours_stats)["spoolers"]), 5, "a running spooler")
    ours = wait_stats(ours_stats)["spoolers"]
    assert [set(s) for s in ours] == [set(s) for s in theirs] == [{"dir", "pid", "tasks", "respawns", "running"}] * 2
    assert [s["dir"] for s in ours] == [str(spool_dir)] * 2
    assert sorted(s["pid"] for s in ours) == sorted(spooler_pids(d))
    wait_for(lambda: json_records(record, "slow"), 10, "the task")
    wait_for(lambda: sum(s["tasks"] for s in wait_stats(ours_stats)["spoolers"]) == 1, 5, "one task counted")
    killed = ours[0]["pid"]
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: wait_stats(ours_stats)["spoolers"][0]["respawns"] == 1
             and wait_stats(ours_stats)["spoolers"][0]["pid"] not in (0, killed), 10, "the respawn counted")
