"""uWSGI signals, timers and cron from an app's decorators: a @timer fires at its period,
a @cron fires when the time matches, a signal for "workers" runs in every worker and one
for "worker" in exactly one; with lazy-apps too (the app registers them in each worker)."""

import time

import pytest
import requests

from conftest import APPS, free_port, wait_for

APP = APPS / "signals_app.py"


def lines(record, kind):
    if not record.exists():
        return []
    return [line.split() for line in record.read_text().splitlines() if line.startswith(kind + " ")]


@pytest.mark.parametrize("lazy", [False, True])
def test_timers_cron_and_signals(daemon, tmp_path, lazy):
    record = tmp_path / "record"
    port = free_port()
    extra = ["--lazy-apps"] if lazy else []
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
           "--env", f"SIGNAL_RECORD={record}", *extra, ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    # @timer(1): about once a second, in one worker each time.
    wait_for(lambda: len(lines(record, "timer")) >= 4, 8, "four timer ticks")
    stamps = [float(t) for _, _, t in lines(record, "timer")[:4]]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(0.7 <= gap <= 1.5 for gap in gaps), gaps
    # @cron(-1, ...): matches every minute, once in each.
    wait_for(lambda: lines(record, "cron"), 3, "the cron job")
    time.sleep(0.5)
    minutes = [int(float(t)) // 60 for _, _, t in lines(record, "cron")]
    assert len(minutes) == len(set(minutes)), minutes
    # A signal for every worker runs in each; one for "worker" in one.
    assert requests.get(f"{url}/raise?n=17", timeout=5).json() is True
    wait_for(lambda: len(lines(record, "all")) == 2, 5, "the signal in both workers")
    assert sorted(w for _, w, _ in lines(record, "all")) == ["1", "2"]
    assert requests.get(f"{url}/raise?n=18", timeout=5).json() is True
    wait_for(lambda: lines(record, "one"), 5, "the signal in one worker")
    time.sleep(0.5)
    assert len(lines(record, "one")) == 1


def test_targets_ngx_wsgi_does_not_have_are_refused(daemon, tmp_path):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--env", f"SIGNAL_RECORD={tmp_path}/r",
           ready=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/badtarget", timeout=5).json() == (
        'signal target "mule1": ngx-wsgi delivers to "worker" (one), "workers" (all) or "workerN"; '
        "mules, spoolers and the master are not provided")


@pytest.mark.parametrize("lazy", [False, True])
def test_filemon_runs_when_the_watched_directory_changes(daemon, tmp_path, lazy):
    record = tmp_path / "record"
    watched = tmp_path / "watched"
    watched.mkdir()
    port = free_port()
    extra = ["--lazy-apps"] if lazy else []
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
               "--env", f"SIGNAL_RECORD={record}", "--env", f"WATCHED={watched}", *extra,
               ready=("127.0.0.1", port))
    d.wait_log(f"file monitor: signal \\d+ when {watched} changes")
    time.sleep(0.2)
    assert lines(record, "filemon") == []
    (watched / "new.txt").write_text("a")
    wait_for(lambda: lines(record, "filemon"), 5, "the handler after a file was added")
    time.sleep(0.5)
    count = len(lines(record, "filemon"))
    (watched / "new.txt").unlink()
    wait_for(lambda: len(lines(record, "filemon")) > count, 5, "the handler after a file was removed")
    # A path that is not there: the app hears why.
    url = f"http://127.0.0.1:{port}"
    assert requests.get(f"{url}/badmonitor", timeout=5).json() == (
        "cannot monitor /nonexistent/dir: No such file or directory (os error 2)")


def test_the_cron_option_runs_a_command_and_cron_harakiri_stops_a_long_one(daemon, tmp_path):
    """uWSGI's `cron` option: a shell command run by the master when the time matches
    (-1: any, so every minute, the first at start); `cron-harakiri` kills a long one."""
    out = tmp_path / "out"
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--env", f"SIGNAL_RECORD={tmp_path}/r",
               "--cron", f"-1 -1 -1 -1 -1 echo ran as $(id -u) >> {out}",
               "--unique-cron", f"-1 -1 -1 -1 -1 sleep 30; echo too late >> {out}",
               "--cron-harakiri", "1", ready=("127.0.0.1", port))
    wait_for(lambda: out.exists() and out.read_text(), 5, "the cron command")
    assert out.read_text() == "ran as 0\n"
    d.wait_log(r"cron: killing `sleep 30; echo too late >> .*` \(pid \d+\) after 1 s \(cron-harakiri\)")
    assert "too late" not in out.read_text()


def test_a_bad_cron_schedule_is_refused_naming_the_field(tmp_path):
    from conftest import check_config
    out = check_config("--socket", tmp_path / "s", "--wsgi-file", APP, "--cron", "61 -1 -1 -1 -1 true")
    assert out.returncode == 2
    assert 'the minute is "61", not 0 to 59, -1 (any) or -N (every N)' in out.stderr
