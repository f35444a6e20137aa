"""Mules: processes that serve no request and run the app's background code, as uWSGI's:
@mulefunc calls from workers, messages to any mule, to mule N, to a farm, a mule running a
script of its own, @mule_brain."""

import re
import signal
import time

from conftest import APPS, free_port, get_json, json_records, pid_alive, wait_for

APP = APPS / "mule_app.py"
SCRIPT = APPS / "mule_script.py"


def start(daemon, tmp_path, *extra):
    port = free_port()
    record = tmp_path / "record.jsonl"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--env", f"MULE_RECORD={record}",
               *extra, ready=("127.0.0.1", port))
    return d, f"http://127.0.0.1:{port}", record



def mule_pids(d, count=None):
    """Mule id -> pid of its latest start (waiting until `count` mules have started)."""
    def started():
        found = {int(m[0]): int(m[1]) for m in re.findall(r"mule (\d+) started \(pid (\d+)\)", d.log())}
        return found if count is None or len(found) >= count else None
    return wait_for(started, 10, f"{count} mules to start") if count else started()


def test_a_mulefunc_call_runs_in_a_mule_with_its_arguments(daemon, tmp_path):
    d, url, record = start(daemon, tmp_path, "--mules", "2", "--processes", "2")
    for i in range(6):
        assert get_json(url, f"/resize?name=img{i}&w={i}") == (200, None)
    wait_for(lambda: len(json_records(record, "resize")) == 6, 10, "six calls")
    calls = json_records(record, "resize")
    assert sorted(c["name"] for c in calls) == [f"img{i}" for i in range(6)]
    assert {tuple(c["size"]) for c in calls} == {(i, 50) for i in range(6)}
    # In mules (worker id 0, mule id 1 or 2), never in a worker.
    pids = mule_pids(d, 2)
    assert all(c["worker"] == 0 and pids[c["mule"]] == c["pid"] for c in calls)
    assert not {c["pid"] for c in calls} & set(d.worker_pids())


def test_mulefunc_n_runs_in_that_mule_and_mule_brain_once(daemon, tmp_path):
    d, url, record = start(daemon, tmp_path, "--mules", "3")
    for n in range(8):
        get_json(url, f"/two?n={n}")
    wait_for(lambda: len(json_records(record, "on_two")) == 8, 10, "eight calls")
    assert {r["mule"] for r in json_records(record, "on_two")} == {2}
    assert [r["n"] for r in json_records(record, "on_two")] == list(range(8))
    # @mule_brain(1): once, in mule 1.
    wait_for(lambda: json_records(record, "brain"), 10, "@mule_brain to run")
    assert [(r["mule"], r["pid"]) for r in json_records(record, "brain")] == [(1, mule_pids(d, 3)[1])]


def test_a_script_mule_and_a_farm(daemon, tmp_path):
    d, url, record = start(daemon, tmp_path, f"--mule={SCRIPT}", "--farm", "heavy:1")
    wait_for(lambda: json_records(record, "script_started"), 10, "the script to start")
    assert get_json(url, "/raw?msg=to-the-farm&to=heavy") == (200, True)
    assert get_json(url, "/raw?msg=to-mule-1&to=1") == (200, True)
    assert get_json(url, "/raw?msg=to-any") == (200, True)
    wait_for(lambda: len(json_records(record, "script_got")) == 3, 10, "three messages")
    assert sorted(r["msg"] for r in json_records(record, "script_got")) == ["to-any", "to-mule-1", "to-the-farm"]
    # The script ends: the mule is started again, as uWSGI does.
    get_json(url, "/raw?msg=quit&to=1")
    d.wait_log(r"mule 1: .*mule_script.py ended")
    wait_for(lambda: len(json_records(record, "script_started")) == 2, 10, "the script started again")
    assert get_json(url, "/raw?msg=again&to=heavy") == (200, True)
    wait_for(lambda: json_records(record, "script_got")[-1]["msg"] == "again", 10, "the new mule's message")


def test_what_a_caller_does_wrong_says_so(daemon, tmp_path):
    _, url, _ = start(daemon, tmp_path, "--mules", "1")
    assert get_json(url, "/raw?msg=x&to=5") == (500, "ValueError: there is no mule 5: mules are 1 to 1")
    assert get_json(url, "/raw?msg=x&to=nofarm") == (500, 'ValueError: there is no farm "nofarm" (farm = NAME:1,2 sets one)')
    assert get_json(url, "/big") == (500, "ValueError: the message is 70000 bytes, over the 65536-byte limit")
    assert get_json(url, "/get") == (500, "ValueError: mule_get_msg() is for mules: this process is not one")
    assert get_json(url, "/id") == (200, 0)


def test_without_mules_mule_msg_says_so(daemon, tmp_path):
    _, url, _ = start(daemon, tmp_path)
    assert get_json(url, "/raw?msg=x") == (500, "ValueError: no mules are configured (set mules = N, or mule = script.py)")


def test_a_farm_naming_a_mule_that_is_not_there_stops_the_start(daemon, tmp_path):
    d = daemon("--socket", tmp_path / "s.sock", "--wsgi-file", APP, "--mules", "1", "--farm", "heavy:1,3",
               "--env", f"MULE_RECORD={tmp_path / 'r'}")
    assert d.wait_exit() != 0
    assert 'farm "heavy:1,3": "3" is not a mule (there are 1: 1 to 1)' in d.log()


def test_a_killed_mule_is_respawned_and_a_stop_is_prompt(daemon, tmp_path):
    d, url, record = start(daemon, tmp_path, "--mules", "1", f"--mule={SCRIPT}")
    pids = mule_pids(d, 2)
    assert set(pids) == {1, 2}  # the script mule first, then the bare one
    import os
    os.kill(pids[2], signal.SIGKILL)
    d.wait_log(rf"mule 2 \(pid {pids[2]}\) was killed by SIGKILL; respawning it")
    wait_for(lambda: mule_pids(d)[2] != pids[2], 10, "mule 2 respawned")
    # (To mule 2 itself: the script mule reads the shared queue too.)
    get_json(url, "/two?n=1")
    wait_for(lambda: json_records(record, "on_two"), 10, "the respawned mule's call")
    assert json_records(record, "on_two")[0]["pid"] == mule_pids(d)[2]
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
    assert time.monotonic() - started < 5
    assert not any(pid_alive(p) for p in mule_pids(d).values())


def test_a_reload_replaces_the_mules(daemon, tmp_path):
    d, url, record = start(daemon, tmp_path, "--mules", "1", "--lazy-apps")
    before = mule_pids(d, 1)[1]
    d.signal(signal.SIGHUP)
    d.wait_log("reload: new workers are up")
    wait_for(lambda: mule_pids(d)[1] != before, 10, "a new mule")
    wait_for(lambda: not pid_alive(before), 10, "the old mule gone")
    get_json(url, "/resize?name=after-reload")
    wait_for(lambda: json_records(record, "resize"), 10, "the call")
    assert json_records(record, "resize")[0]["pid"] == mule_pids(d)[1]
