#!/usr/bin/env python3
"""The uwsgi cache API's cost, ngx-wsgi beside uWSGI (pyuwsgi), on the same machine in one
interleaved run: each server runs bench/cache_app.py in 2 workers with the same cache2
cache; two clients at once ask each worker to run N cache_set (or cache_get) calls of
100-byte values on 1,000 keys and time them inside the app. Reports operations per second
over both workers and microseconds per operation.

Usage: .venv/bin/python bench/cache.py [ROUNDS] (default 3); NGX_WSGI_BIN= another build.
"""

import concurrent.futures
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = ROOT / "bench" / "cache_app.py"
CACHE = "name=bench,items=2000,blocksize=256"
OPS = 200_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(port):
    ngx = os.environ.get("NGX_WSGI_BIN", str(ROOT / "target" / "release" / "ngx-wsgi"))
    common = ["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(APP), "--processes", "2",
              "--cache2", CACHE, "--disable-logging"]
    return {
        "ngx-wsgi": [ngx, *common],
        "uWSGI": [str(ROOT / ".venv" / "bin" / "uwsgi"), *common, "--master"],
    }


def measure(command, port, op):
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/bench?op=set&n=10", timeout=5).read()
                break
            except OSError:
                time.sleep(0.05)

        def one(_):
            url = f"http://127.0.0.1:{port}/bench?op={op}&n={OPS}"
            pid, seconds = urllib.request.urlopen(url, timeout=300).read().decode().split()
            return int(pid), float(seconds)

        # Two at once, until both workers ran one each (each on its own core): a worker
        # may take both connections, and would then run them one after the other.
        for _ in range(10):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(one, range(2)))
            if len({pid for pid, _ in results}) == 2:
                break
        wall = max(s for _, s in results)
        return 2 * OPS / wall, statistics.mean(s for _, s in results) / OPS * 1e6, len({p for p, _ in results})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rows = {}
    for _ in range(rounds):
        for op in ("set", "get"):
            port = free_port()
            for name, command in servers(port).items():
                rows.setdefault((op, name), []).append(measure(command, port, op))
    print(f"| operation | server | ops/s, 2 workers (median of {rounds}) | µs per op | workers that ran it |")
    print("|---|---|---:|---:|---:|")
    for (op, name), results in sorted(rows.items()):
        ops = statistics.median(r[0] for r in results)
        micros = statistics.median(r[1] for r in results)
        workers = min(r[2] for r in results)
        print(f"| cache_{op} | {name} | {ops:,.0f} | {micros:.2f} | {workers} |")


if __name__ == "__main__":
    main()
