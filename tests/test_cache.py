"""cache2: one cache shared by every worker and thread, in shared memory, surviving a
worker's death and a reload; uWSGI's API (cache_get/set/update/del/exists/keys/clear/inc)
with expiry and limits; django-uwsgi-cache as a Django project's cache backend."""

import concurrent.futures
import signal
import time

import requests

from conftest import APPS, VENV, check_config, free_port

APP = APPS / "cache_app.py"
SHARED = "name=shared,items=100,blocksize=64"


def start(daemon, *extra):
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP, "--processes", "2", "--threads", "4",
               "--cache2", SHARED, "--disable-logging", *extra, ready=("127.0.0.1", port))
    return d, f"http://127.0.0.1:{port}"


def get(url, path, **params):
    return requests.get(url + path, params=params, timeout=10).json()


def test_one_counter_for_every_worker_and_thread(daemon):
    d, url = start(daemon)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: get(url, "/inc"), range(400)))
    assert all(r["ok"] for r in results)
    assert len({r["pid"] for r in results}) == 2, "both workers counted"
    assert get(url, "/num") == {"num": 400}


def test_values_are_shared_and_follow_uwsgis_rules(daemon):
    d, url = start(daemon)
    assert get(url, "/set", k="a", v="one") == {"ok": True}
    # cache_set leaves an existing key (None); cache_update replaces it.
    assert get(url, "/set", k="a", v="two") == {"ok": None}
    seen = {}
    # From both workers: requests at once, more than one worker's 4 threads take (one
    # after the other, the thread that answered last may take every next connection).
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for r in pool.map(lambda _: get(url, "/get", k="a"), range(200)):
            seen.setdefault(r["pid"], set()).add(r["v"])
    assert list(seen.values()) == [{"one"}, {"one"}]
    assert get(url, "/update", k="a", v="three") == {"ok": True}
    assert get(url, "/get", k="a")["v"] == "three"
    assert get(url, "/exists", k="a") == {"ok": True} and get(url, "/exists", k="zz") == {"ok": None}
    get(url, "/set", k="b", v="x")
    assert get(url, "/keys") == {"keys": ["a", "b"]}
    assert get(url, "/del", k="a") == {"ok": True} and get(url, "/del", k="a") == {"ok": None}
    assert get(url, "/clear") == {"ok": True} and get(url, "/keys") == {"keys": []}
    # Expiry in seconds.
    get(url, "/set", k="soon", v="gone", t="1")
    assert get(url, "/get", k="soon")["v"] == "gone"
    time.sleep(2.1)
    assert get(url, "/get", k="soon")["v"] is None


def test_limits_refuse_without_corrupting(daemon):
    d, url = start(daemon)
    get(url, "/set", k="keep", v="safe")
    # A value over the block size, a key over keysize (2048): refused with None.
    assert get(url, "/big", n="65") == {"ok": None}
    assert get(url, "/big", n="64") == {"ok": True}
    assert get(url, "/longkey", n="2049") == {"ok": None}
    assert get(url, "/longkey", n="2048") == {"ok": True}
    # Full: 100 items.
    results = [get(url, "/set", k=f"k{i}", v="v")["ok"] for i in range(100)]
    assert results.count(True) == 97 and results[-3:] == [None, None, None]
    assert get(url, "/get", k="keep")["v"] == "safe"
    assert get(url, "/nocache") == 'no cache named "nosuchcache": add cache2 = name=nosuchcache,items=N'


def test_the_cache_survives_a_killed_worker_and_a_reload(daemon):
    d, url = start(daemon)
    get(url, "/set", k="k", v="kept")
    for pid in d.worker_pids():
        d_pid = pid
        break
    import os
    os.kill(d_pid, signal.SIGKILL)
    d.wait_log("respawning")
    assert get(url, "/get", k="k")["v"] == "kept"
    d.signal(signal.SIGHUP)
    d.wait_log("reload: new workers are up")
    assert 'cache "shared": kept across the reload' in d.log()
    for _ in range(10):
        assert get(url, "/get", k="k")["v"] == "kept"


def test_django_uwsgi_cache_backend(daemon):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "django_cache_app.py", "--processes", "2",
           "--home", VENV,
           "--cache2", "name=djcache,items=200,blocksize=1k", "--disable-logging", ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    get(url, "/put", k="greeting", v="hello")
    seen = {}
    # From both workers: requests at once (see test_values_are_shared_and_follow_uwsgis_rules).
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for r in pool.map(lambda _: get(url, "/get", k="greeting"), range(200)):
            assert r["backend"] == "uwsgicache", "the uwsgi backend, not its LocMemCache fallback"
            seen[r["pid"]] = r["v"]
    assert len(seen) == 2 and set(map(str, seen.values())) == {"{'value': 'hello'}"}
    # cache.add: only once, whichever worker answers.
    assert [get(url, "/add", k="once")["added"] for _ in range(6)] == [True] + [False] * 5
    get(url, "/put", k="brief", v="x", t="1")
    assert get(url, "/get", k="brief")["v"] == {"value": "x"}
    time.sleep(2.1)
    assert get(url, "/get", k="brief")["v"] is None


def test_bad_cache2_lines_name_file_and_line(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nsocket = /tmp/x.sock\nwsgi-file = app.py\ncache2 = name=c,items=10,colour=red\n"
                   "cache2 = items=10\n")
    out = check_config(ini)
    assert out.returncode != 0
    assert (f'{ini}:4: invalid value "name=c,items=10,colour=red" for option "cache2": expected cache2 keys: '
            'name, items, blocksize, blocks, bitmap, sweep_on_full, purge_lru, keysize, lazy; "colour" is not one'
            ) in out.stderr
    assert f'{ini}:5: invalid value "items=10" for option "cache2": expected a name: name=NAME,items=N' in out.stderr


def test_shared_locks_serialize_workers(daemon):
    d, url = start(daemon, "--locks", "2")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: get(url, "/locked-inc"), range(300)))
    assert get(url, "/get", k="plain")["v"] == "300"
    assert get(url, "/is-locked", n="2") == {"locked": False}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holding = pool.submit(get, url, "/hold", s="1")
        time.sleep(0.4)
        # Another worker or thread sees lock 2 held.
        assert get(url, "/is-locked", n="2") == {"locked": True}
        holding.result()
    assert get(url, "/is-locked", n="2") == {"locked": False}
    assert get(url, "/badlock") == "there is no lock 99: locks are 0 to 2 (set locks = N for more)"


def test_the_stats_server_shows_the_caches(daemon):
    import json
    from test_stats import read_stats
    stats_port = free_port()
    d, url = start(daemon, "--stats", f"127.0.0.1:{stats_port}")
    get(url, "/set", k="a", v="1")
    get(url, "/get", k="a")
    get(url, "/get", k="missing")
    [cache] = json.loads(read_stats(("127.0.0.1", stats_port)))["caches"]
    assert {k: cache[k] for k in ("name", "max_items", "blocksize", "items", "hits", "miss")} == {
        "name": "shared", "max_items": 100, "blocksize": 64, "items": 1, "hits": 1, "miss": 1}


def test_the_stats_server_lists_the_locks_as_uwsgi_names_them(daemon, tmp_path):
    """`locks`: uWSGI's user locks ("user N") and cache locks ("cache_NAME"), with the
    names real uWSGI (pyuwsgi) gives them for the same options; 1 while held."""
    from test_stats import uwsgi_stats, wait_stats
    their_stats = uwsgi_stats(tmp_path, "--locks", "2", "--cache2", "name=shared,items=100,blocksize=64")
    theirs = [name for lock in their_stats["locks"] for name in lock]
    stats_port = free_port()
    d, url = start(daemon, "--locks", "2", "--stats", f"127.0.0.1:{stats_port}")
    ours = wait_stats(("127.0.0.1", stats_port))["locks"]
    assert [name for lock in ours for name in lock] == ["user 0", "user 1", "user 2", "cache_shared"]
    assert [n for n in theirs if n.startswith(("user", "cache_"))] == ["user 0", "user 1", "user 2", "cache_shared"]
    assert all(value == 0 for lock in ours for value in lock.values())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holding = pool.submit(get, url, "/hold", s="1")
        time.sleep(0.4)
        held = wait_stats(("127.0.0.1", stats_port))["locks"]
        assert {"user 2": 1} in held and {"user 1": 0} in held
        holding.result()


def test_a_flask_app_shares_its_cache_across_two_workers_and_four_threads(daemon):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "flask_cache_app.py", "--home", VENV,
           "--processes", "2", "--threads", "4", "--cache2", "name=flask,items=100,blocksize=256", "--disable-logging",
           ready=("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"

    def visit(_):
        with requests.Session() as s:
            return [s.get(f"{url}/view/home", timeout=10).json() for _ in range(25)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        pages = [page for visits in pool.map(visit, range(16)) for page in visits]
    # Both workers among them (the kernel picks which takes a connection: more if needed).
    pids = {p["pid"] for p in pages}
    for _ in range(300):
        if len(pids) == 2:
            break
        pages.append(requests.get(f"{url}/view/home", timeout=10).json())
        pids.add(pages[-1]["pid"])
    assert len(pids) == 2, "both workers served"
    # Every view counted once, whichever worker and thread served it...
    assert get(url, "/views/home") == {"views": len(pages)}
    # ... and one rendering cached for all of them.
    assert len({p["html"] for p in pages}) == 1
