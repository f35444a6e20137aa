"""`import uwsgi` and `uwsgidecorators`: an app written for uWSGI runs unchanged. The same
app runs under real uWSGI (pyuwsgi) in the same test, and the two agree on the shape of
what it sees; a name of uWSGI's module ngx-wsgi does not provide raises AttributeError
naming it (hasattr() answers False)."""

import concurrent.futures
import os
import re
import subprocess

import pytest
import requests

from conftest import APPS, VENV, can_connect, free_port, wait_for

APP = APPS / "uwsgi_api_app.py"


def info(url):
    return requests.get(f"{url}/info", timeout=5).json()


def test_an_app_sees_the_server_as_uwsgi_shows_it(daemon, tmp_path):
    port = free_port()
    record = tmp_path / "postfork"
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2", "--threads", "2",
               "--buffer-size", "32768", "--env", f"POSTFORK_RECORD={record}", "--env", "A=1", "--env", "B=2",
               ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    seen = {}
    # From both workers: requests at once, more than one worker's 2 threads take (one
    # after the other, the thread that answered last may take every next connection).
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for got in pool.map(lambda _: info(url), range(64)):
            seen[got["worker_id"]] = got
    assert set(seen) == {1, 2}
    me = seen[1]
    assert (me["numproc"], me["cores"], me["buffer_size"]) == (2, 2, 32768)
    assert me["masterpid"] == me["ppid"] == d.pid
    assert me["hostname"] == os.uname().nodename and me["version_is_bytes"] and me["has_threads"]
    assert abs(me["started_on"] - __import__("time").time()) < 120
    assert me["mem"][0] > 1_000_000 and me["mem"][1] >= me["mem"][0]
    assert (me["mule_id"], me["i_am_the_spooler"]) == (0, None)
    # opt: the options given, bytes values, lists for repeated ones, True for flags.
    assert me["opt"]["processes"] == "2" and me["opt"]["buffer-size"] == "32768"
    assert me["opt"]["env"] == [f"POSTFORK_RECORD={record}", "A=1", "B=2"]
    assert me["opt"]["http-socket"] == [f"127.0.0.1:{port}"]
    assert "harakiri" not in me["opt"], "defaults are left out, as uWSGI does"
    assert [w["id"] for w in me["workers"]] == [1, 2]
    assert {w["pid"] for w in me["workers"]} == {seen[1]["pid"], seen[2]["pid"]}
    # @postfork ran once in each worker, after fork.
    runs = sorted(record.read_text().split("\n")[:-1])
    assert runs == sorted(f"{wid} {seen[wid]['pid']}" for wid in (1, 2))
    assert info(url)["total_requests"] >= 2


def test_postfork_runs_after_the_app_loads_with_lazy_apps(daemon, tmp_path):
    port = free_port()
    record = tmp_path / "postfork"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2", "--lazy-apps",
           "--env", f"POSTFORK_RECORD={record}", ready=("127.0.0.1", port))
    wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == 2, 10, "two postfork runs")
    assert sorted(line.split()[0] for line in record.read_text().splitlines()) == ["1", "2"]


def test_the_same_app_under_real_uwsgi_sees_the_same_shapes(daemon, tmp_path):
    port, theirs_port = free_port(), free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2",
           ready=("127.0.0.1", port))
    proc = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{theirs_port}",
                             "--wsgi-file", str(APP), "--processes", "2", "--master", "--disable-logging"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: can_connect(("127.0.0.1", theirs_port)), 15, "uWSGI")
        ours, theirs = info(f"http://127.0.0.1:{port}"), info(f"http://127.0.0.1:{theirs_port}")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    # Every key uWSGI's workers() gives, ngx-wsgi's gives too (with uwsgitop's fields).
    assert set(theirs["workers"][0]["keys"]) <= set(ours["workers"][0]["keys"])
    assert set(theirs["workers"][0]["app_keys"]) <= set(ours["workers"][0]["app_keys"])
    for key in ("numproc", "cores", "buffer_size", "mule_id", "i_am_the_spooler", "version_is_bytes"):
        assert type(ours[key]) is type(theirs[key]), key
    assert ours["opt"]["processes"] == theirs["opt"]["processes"] == "2"
    assert ours["opt"]["wsgi-file"] == theirs["opt"]["wsgi-file"] == str(APP)


def test_control_log_logvars_and_procname(daemon, tmp_path):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--log-format", "line %(method) %(uri) user=%(user_id)", ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    assert requests.get(f"{url}/log").json() == "logged"
    assert requests.get(f"{url}/logvar").json() == "42"
    requests.get(f"{url}/info")
    d.wait_log(r"line GET /info user=$")
    log = d.log()
    assert "a line from the app via uwsgi.log" in log
    # The variable is the request's: the next request's line has none.
    assert re.search(r"^line GET /logvar user=42$", log, re.M)
    assert requests.get(f"{url}/procname").json() == "set"
    pid = requests.get(f"{url}/info").json()["pid"]
    assert open(f"/proc/{pid}/comm").read().strip() == "my-app-worker"


def test_chain_reload_from_the_app_replaces_every_worker(daemon):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2", "--lazy-apps",
               ready=("127.0.0.1", port))
    before = set(d.worker_pids())
    assert requests.get(f"http://127.0.0.1:{port}/chain").json() is True
    d.wait_log("chain reload: done", timeout=30)
    after = set(d.worker_pids())
    assert len(after) == 2 and not before & after


def test_set_user_harakiri_and_the_harakiri_decorator(daemon, tmp_path):
    """A request that outlives its set_user_harakiri(N) is killed with its worker, as by
    harakiri (none is set here); disarmed with 0, it runs on."""
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    assert requests.get(f"{url}/user_harakiri?disarm", timeout=10).json() == "survived"
    first = d.worker_pids()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/user_harakiri", timeout=10)
    d.wait_log(r"HARAKIRI: .* has run for 1\.\d s, over set_user_harakiri\(1\): killing this worker")
    wait_for(lambda: d.worker_pids() and d.worker_pids() != first, 10, "the worker replaced")
    # @harakiri(1): a call in time returns; one over the limit takes the worker with it.
    assert requests.get(f"{url}/decorated?0.1", timeout=10).json() == "in time"
    assert requests.get(f"{url}/decorated?0.1", timeout=10).json() == "in time"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/decorated?3", timeout=10)
    assert len(re.findall(r"over set_user_harakiri\(1\)", d.log())) == 2


def test_parsefile_reads_a_spool_file(daemon, tmp_path):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    task = tmp_path / "task"
    # A uwsgi packet as uWSGI's spooler writes one: modifier1 17, two vars.
    vars_block = b"".join(len(x).to_bytes(2, "little") + x for x in (b"name", b"value", b"n", b"42"))
    task.write_bytes(bytes([17]) + len(vars_block).to_bytes(2, "little") + b"\x00" + vars_block)
    assert requests.get(f"{url}/parsefile?{task}", timeout=5).json() == {"name": "value", "n": "42"}
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x11\xff\x00\x00ab")
    assert requests.get(f"{url}/parsefile?{junk}", timeout=5).json() is None


@pytest.mark.parametrize("module", ["uwsgi", "uwsgidecorators"])
def test_the_modules_import_outside_a_request_too(daemon, tmp_path, module):
    # At import time of the app (in the master, before fork), as Django settings do.
    app = tmp_path / "app.py"
    app.write_text(f"import {module}\nimport uwsgi\nWID = uwsgi.worker_id()\n"
                   "def application(e, s):\n    s('200 OK', [])\n    return [str(WID).encode()]\n")
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", app, ready=("127.0.0.1", port))
    # Imported in the master (worker id 0) and forked.
    assert requests.get(f"http://127.0.0.1:{port}/").text == "0"


def test_what_is_not_provided_says_so(daemon, tmp_path):
    """uWSGI's module has more than the API ngx-wsgi provides (RPC, sharedarea, queues,
    websockets, ...): using such a name says so; hasattr() answers False, as packages that
    probe for features expect."""
    app = tmp_path / "app.py"
    app.write_text(
        "import json, uwsgi\n"
        "def application(e, s):\n"
        "    out = {'hasattr': hasattr(uwsgi, 'rpc')}\n"
        "    try:\n"
        "        uwsgi.rpc('node', 'func')\n"
        "    except AttributeError as err:\n"
        "        out['call'] = str(err)\n"
        "    import uwsgidecorators\n"
        "    try:\n"
        "        uwsgidecorators.rpc\n"
        "    except AttributeError as err:\n"
        "        out['decorator'] = str(err)\n"
        "    s('200 OK', [])\n"
        "    return [json.dumps(out).encode()]\n")
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", app, ready=("127.0.0.1", port))
    got = requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()
    assert got["hasattr"] is False
    assert got["call"] == ("module 'uwsgi' has no attribute 'rpc': ngx-wsgi does not provide uwsgi.rpc "
                           "(docs/uwsgi-api.md lists what it provides)")
    assert "ngx-wsgi does not provide uwsgidecorators.rpc" in got["decorator"]
