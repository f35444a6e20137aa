"""Interleaved benchmark: stock nginx uwsgi_pass to ngx-wsgi and to uWSGI (pyuwsgi).

Both backends serve bench/app.py with the same process count on unix sockets, behind
one nginx (one worker, one server block each). For each workload the targets run in
turn, several rounds, so drift on the machine hits both alike. CPU per request is read
from /proc: user+system time of the backend's processes (and of nginx's worker) over the
run, divided by the requests wrk completed.
"""

import argparse
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
WORKLOADS = {
    "hello": ("/hello", []),
    "64k": ("/64k", []),
    "post16k": ("/echo", ["-s", str(ROOT / "bench" / "post16k.lua")]),
}


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, IndexError):
            pass
    return total / TICKS


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = pathlib.Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except FileNotFoundError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def peak_rss_kib(pids):
    peak = 0
    for pid in pids:
        try:
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            pass
    return peak


def wait_socket(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"backend exited early: {proc.args}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return
            except OSError:
                time.sleep(0.05)
    sys.exit(f"no socket at {path}")


def parse_wrk(text):
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return requests, rps, p99_ms, errors + (int(non2xx.group(1)) if non2xx else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-bench-"))
    os.chmod(work, 0o755)
    app = ROOT / "bench" / "app.py"
    common = ["--processes", str(args.processes), "--master", "--disable-logging", "--listen", "1024",
              "--wsgi-file", str(app)]
    targets = {
        "ngx-wsgi": [str(ROOT / "target" / "release" / "ngx-wsgi"), "--socket", str(work / "ngx-wsgi.sock"), *common],
        "uWSGI": [str(ROOT / ".venv" / "bin" / "uwsgi"), "--socket", str(work / "uWSGI.sock"), *common,
                  "--buffer-size", "65535", "--die-on-term"],
    }
    procs, ports = {}, {}
    for name, cmd in targets.items():
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "wb"),
                                       start_new_session=True)
        wait_socket(str(work / f"{name}.sock"), procs[name])
    servers = []
    for i, name in enumerate(targets):
        ports[name] = 18080 + i
        servers.append(f"""server {{ listen 127.0.0.1:{ports[name]} backlog=1024;
            location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{work / (name + '.sock')}; }} }}""")
    (work / "nginx.conf").write_text(f"""
        user root; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
        events {{ worker_connections 4096; }}
        http {{ access_log off; client_body_temp_path {work}/body; client_body_buffer_size 64k; {' '.join(servers)} }}""")
    nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                             start_new_session=True)
    time.sleep(1)
    nginx_pids = [p for p in tree(nginx.pid) if p != nginx.pid]

    results = {}
    try:
        for workload, (path, extra) in WORKLOADS.items():
            for _ in range(args.rounds):
                for name in targets:
                    backend = tree(procs[name].pid)
                    before = cpu_seconds(backend), cpu_seconds(nginx_pids)
                    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                                          *extra, f"http://127.0.0.1:{ports[name]}{path}"],
                                         capture_output=True, text=True, check=True).stdout
                    after = cpu_seconds(tree(procs[name].pid)), cpu_seconds(nginx_pids)
                    n, rps, p99, errors = parse_wrk(out)
                    results.setdefault((workload, name), []).append(
                        (rps, p99, (after[0] - before[0]) / n * 1e6, (after[1] - before[1]) / n * 1e6, errors))
        rss = {name: peak_rss_kib([p for p in tree(procs[name].pid) if p != procs[name].pid]) for name in targets}
    finally:
        nginx.send_signal(signal.SIGQUIT)
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGINT)
        for proc in [nginx, *procs.values()]:
            proc.wait(20)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.rounds} interleaved rounds of {args.duration} s, wrk -t1 -c{args.connections}, "
          f"{args.processes} processes per backend, nginx 1 worker, unix sockets; medians\n")
    print(f"| workload | backend | requests/s | p99 ms | backend CPU µs/req | nginx CPU µs/req | errors | req/s vs uWSGI |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload in WORKLOADS:
        base = statistics.median(r[0] for r in results[(workload, "uWSGI")])
        for name in targets:
            rows = results[(workload, name)]
            med = [statistics.median(r[i] for r in rows) for i in range(4)]
            errs = sum(r[4] for r in rows)
            print(f"| {workload} | {name} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.1f} | {med[3]:.1f} | {errs} | "
                  f"{med[0] / base:.2f} |")
    print("\npeak RSS per worker (VmHWM): " + ", ".join(f"{n} {kib / 1024:.1f} MiB" for n, kib in rss.items()))


if __name__ == "__main__":
    main()
