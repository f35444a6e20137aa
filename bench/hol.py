"""Head-of-line blocking: fast requests while a slow one runs, behind nginx.

The scenario of the connection-reuse issue: 4 worker processes (one thread each), one
client looping on a slow request (`/sleep?ms=100`, or 5 s with `--slow-ms 5000`), and
wrk on 16 connections of hello-world. Targets, in turn, several rounds: our module with
`wsgi_app` and its defaults, and stock `uwsgi_pass` to uWSGI (pyuwsgi), whose free
workers take the next connection from the shared listen queue. Every fast request's
outcome is counted by wrk (errors, non-2xx), every slow one by the slow client.

With `--impatient N`, N clients loop on the slow request instead, each giving up after
`--give-up-ms` and sending it again on a new connection (a user pressing reload on a slow
page): the backend runs a request whose client left unless it never reached it.
"""

import argparse
import http.client
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import ROOT, parse_wrk, stop, wait_ready  # noqa: E402


def wrk_latency(text):
    """p50, p90, p99 and max of wrk --latency, in ms."""
    unit = {"us": 0.001, "ms": 1, "s": 1000}
    pct = {p: float(v) * unit[u] for p, v, u in re.findall(r"\s(50|90|99)%\s+([\d.]+)(us|ms|s)", text)}
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    return pct["50"], pct["90"], pct["99"], float(m.group(1)) * unit[m.group(2)]


class SlowClient(threading.Thread):
    """Loops on the slow endpoint over one kept-alive connection, counting outcomes; or,
    with `give_up_ms`, over a new connection each time, closed when no answer came in that
    time (counted as left)."""

    def __init__(self, port, ms, give_up_ms=None):
        super().__init__(daemon=True)
        self.port, self.ms, self.give_up_ms = port, ms, give_up_ms
        self.stop = threading.Event()
        self.ok = self.failed = self.left = 0

    def run(self):
        impatient = self.give_up_ms is not None
        timeout = self.give_up_ms / 1000 if impatient else self.ms / 1000 + 30
        # Closed, http.client connects again for the next request.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        while not self.stop.is_set():
            try:
                conn.request("GET", f"/sleep?ms={self.ms}")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
            except OSError as err:
                # An impatient client's time running out is its leaving, not a failure.
                if impatient and isinstance(err, TimeoutError):
                    self.left += 1
                else:
                    self.failed += 1
                conn.close()
            if impatient:
                # The next try on a new connection, as a reload does.
                conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="wrk's fast connections")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--daemon-option", action="append", default=[], metavar="'NAME = VALUE'",
                        help="one more line of ngx-wsgi's config (e.g. 'sched-batch = false'); repeatable")
    parser.add_argument("--slow-ms", type=int, default=100)
    parser.add_argument("--nginx-workers", type=int, default=1,
                        help="nginx's worker_processes (Debian's nginx.conf says auto: one per core)")
    parser.add_argument("--impatient", type=int, default=0,
                        help="clients that give up on the slow request and send it again, instead of one that waits")
    parser.add_argument("--give-up-ms", type=int, default=50)
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-hol-"))
    os.chmod(work, 0o755)
    app = ROOT / "bench" / "app.py"
    procs_n = str(args.processes)
    one_config = work / "app.ini"
    one_config.write_text(f"[uwsgi]\nsocket = {work / 'app.sock'}\nprocesses = {procs_n}\nmaster = true\n"
                          f"disable-logging = true\nlisten = 1024\nwsgi-file = {app}\n"
                          + "".join(f"{line}\n" for line in args.daemon_option))
    targets = {
        "wsgi_app + ngx-wsgi": ([str(ROOT / "target" / "release" / "ngx-wsgi"), str(one_config)],
                                str(work / "app.sock"), f"wsgi_app {one_config};"),
        "uwsgi_pass + uWSGI": ([str(ROOT / ".venv" / "bin" / "uwsgi"), "--socket", str(work / "uWSGI.sock"),
                                "--processes", procs_n, "--master", "--disable-logging", "--listen", "1024",
                                "--wsgi-file", str(app), "--die-on-term"],
                               str(work / "uWSGI.sock"),
                               f"include /etc/nginx/uwsgi_params; uwsgi_pass unix:{work / 'uWSGI.sock'};"),
    }
    baseline = "uwsgi_pass + uWSGI"
    procs, ports, servers, slow_runs = {}, {}, [], {}
    for i, (name, (cmd, ready, location)) in enumerate(targets.items()):
        runs = work / f"slow-runs-{i}"
        runs.touch()
        slow_runs[name] = runs
        procs[name] = subprocess.Popen(cmd, cwd=ROOT / "bench", stdout=subprocess.DEVNULL,
                                       stderr=open(work / f"backend-{i}.log", "wb"), start_new_session=True,
                                       env={**os.environ, "BENCH_SLOW_RUNS": str(runs)})
        wait_ready(ready, procs[name])
        ports[name] = 18180 + i
        servers.append(f"server {{ listen 127.0.0.1:{ports[name]} backlog=1024; location / {{ {location} }} }}")
    module = ROOT / "target" / "release" / "libngx_http_wsgi_module.so"
    (work / "nginx.conf").write_text(f"""
        load_module {module};
        user root; worker_processes {args.nginx_workers}; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
        events {{ worker_connections 4096; }}
        http {{ access_log off; uwsgi_read_timeout 60s; {' '.join(servers)} }}""")
    nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                             start_new_session=True)
    time.sleep(1)
    results = {}
    try:
        for _ in range(args.rounds):
            for name in targets:
                if args.impatient:
                    slows = [SlowClient(ports[name], args.slow_ms, args.give_up_ms) for _ in range(args.impatient)]
                else:
                    slows = [SlowClient(ports[name], args.slow_ms)]
                runs_before = slow_runs[name].stat().st_size
                for slow in slows:
                    slow.start()
                time.sleep(0.2)
                out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                                      f"http://127.0.0.1:{ports[name]}/hello"],
                                     capture_output=True, text=True, check=True).stdout
                for slow in slows:
                    slow.stop.set()
                for slow in slows:
                    slow.join(args.slow_ms / 1000 + 30)
                n, rps, _, errors = parse_wrk(out)
                results.setdefault(name, []).append((rps, *wrk_latency(out), n, errors, *(
                    sum(getattr(slow, count) for slow in slows) for count in ("ok", "failed", "left")),
                    slow_runs[name].stat().st_size - runs_before))
    finally:
        stop(nginx, list(procs.values()))
        shutil.rmtree(work, ignore_errors=True)

    slow = (f"{args.impatient} clients loop on a {args.slow_ms} ms request, giving up after {args.give_up_ms} ms"
            if args.impatient else f"one client loops on a {args.slow_ms} ms request")
    print(f"\n{args.rounds} interleaved rounds of {args.duration} s: wrk -t1 -c{args.connections} on /hello while "
          f"{slow}; {args.processes} processes x 1 thread; nginx {args.nginx_workers} worker(s); "
          "medians (counts: sums)\n")
    print("| stack | fast req/s | p50 ms | p90 ms | p99 ms | max ms | fast sent | fast errors | slow ok | slow failed "
          "| slow left | slow run by the app | req/s vs uWSGI | p99 vs uWSGI |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = [statistics.median(r[i] for r in results[baseline]) for i in range(5)]
    for name, rows in results.items():
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        sums = [sum(r[i] for r in rows) for i in range(5, 11)]
        ratios = [f"{ours / theirs:.2f}" if theirs else "-" for ours, theirs in ((med[0], base[0]), (med[3], base[3]))]
        print(f"| {name} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.1f} | "
              + " | ".join(str(count) for count in sums + ratios) + " |")


if __name__ == "__main__":
    main()
