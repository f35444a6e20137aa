"""Interleaved benchmark of nginx-fronted WSGI stacks on one machine.

Every backend serves bench/app.py with the same process count behind one nginx (one
worker, a server block each): stock `uwsgi_pass` on unix sockets to ngx-wsgi and to
uWSGI (pyuwsgi), our module's `wsgi_pass` with upstream keepalive and `wsgi_app` (the
daemon's config file, which nginx reads too) to ngx-wsgi, and
`proxy_pass` with upstream keepalive to ngx-wsgi's own HTTP listener and to Granian. Ratios are to the nginx + uwsgi_pass + uWSGI stack. For each workload the targets run in
turn, several rounds, so drift on the machine hits both alike. CPU per request is read
from /proc: user+system time of the backend's processes (and of nginx's worker) over the
run, divided by the requests wrk completed; wrk's own, from its rusage. All share the
machine's cores: a stack's requests/s can gain on another's no more than their CPU per
request, wrk's included, differs (the last column), unless it leaves the cores idle part
of the time (the machine's idle time during the run, /proc/stat).
"""

import argparse
import os
import pathlib
import resource
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
    "flask": ("/flask/world", []),
}


def idle_and_total_ticks():
    """The machine's idle CPU time and all its CPU time so far (/proc/stat, in ticks)."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    return ticks[3], sum(ticks[:8])


def client_cpu_seconds():
    """User+system time of the children this script waited for (each wrk run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def wait_ready(addr, proc, timeout=20):
    """Waits until a backend accepts connections on a unix path or a (host, port)."""
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"backend exited early: {proc.args}")
        with socket.socket(family) as s:
            try:
                s.connect(addr)
                return
            except OSError:
                time.sleep(0.05)
    sys.exit(f"no backend listening on {addr}: {proc.args}")


def stop(nginx, backends):
    """Stops nginx (None: not started yet) and the backends (their process groups),
    killing what does not stop."""
    if nginx is not None:
        nginx.send_signal(signal.SIGQUIT)
    for proc in backends:
        os.killpg(proc.pid, signal.SIGINT)
    for proc in [p for p in [nginx, *backends] if p is not None]:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # a backend slow to stop must not lose the results
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
    parser.add_argument("--daemon-option", action="append", default=[], metavar="'NAME = VALUE'",
                        help="one more line of the config wsgi_app's daemon reads (e.g. 'sched-batch = false'); "
                             "repeatable")
    parser.add_argument("--nginx-workers", type=int, default=1,
                        help="nginx's worker_processes (Debian's nginx.conf says auto: one per core)")
    parser.add_argument("--only", nargs="*", help="run only the targets whose name contains one of these")
    parser.add_argument("--workloads", nargs="*", choices=list(WORKLOADS), help="run only these workloads")
    parser.add_argument("--static-bin", help="also run wsgi_app with this daemon, built with Python linked "
                        "statically (make static-daemon: target/python-static/release/ngx-wsgi)")
    args = parser.parse_args()
    workloads = {w: WORKLOADS[w] for w in args.workloads or WORKLOADS}

    work = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-bench-"))
    os.chmod(work, 0o755)
    app = ROOT / "bench" / "app.py"
    procs_n = str(args.processes)
    # The venv (Flask) for every backend; uWSGI's pyuwsgi runs in it anyway.
    venv = str(ROOT / ".venv")
    common = ["--processes", procs_n, "--master", "--disable-logging", "--listen", "1024", "--wsgi-file", str(app),
              "--virtualenv", venv]
    ngx_wsgi = os.environ.get("NGX_WSGI_BIN", str(ROOT / "target" / "release" / "ngx-wsgi"))
    http_port, granian_port = 18090, 18091
    uwsgi_pass = "include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock};"
    proxy_pass = "proxy_pass http://{name}; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    # The daemon and nginx's wsgi_app read the same file.
    def one_config(name):
        path = work / f"{name}.ini"
        path.write_text(f"[uwsgi]\nsocket = {work / name}.sock\nprocesses = {procs_n}\nmaster = true\n"
                        f"disable-logging = true\nlisten = 1024\nwsgi-file = {app}\nvirtualenv = {venv}\n"
                        + "".join(f"{line}\n" for line in args.daemon_option))
        return path
    # name: (backend command, where it listens, nginx location directives, upstream block)
    targets = {
        "uwsgi_pass + ngx-wsgi": (
            [ngx_wsgi, "--socket", str(work / "ngx-wsgi.sock"), *common],
            str(work / "ngx-wsgi.sock"), uwsgi_pass.format(sock=work / "ngx-wsgi.sock"), None),
        "wsgi_pass keepalive + ngx-wsgi": (
            [ngx_wsgi, "--socket", str(work / "ngx-wsgi-ka.sock"), *common],
            str(work / "ngx-wsgi-ka.sock"), "wsgi_pass ngx_wsgi_ka;",
            f"upstream ngx_wsgi_ka {{ server unix:{work / 'ngx-wsgi-ka.sock'}; keepalive 32; }}"),
        "wsgi_app + ngx-wsgi, one config": (
            [ngx_wsgi, str(one_config("app"))], str(work / "app.sock"), f"wsgi_app {work / 'app.ini'};", None),
        "uwsgi_pass + uWSGI": (
            [str(ROOT / ".venv" / "bin" / "uwsgi"), "--socket", str(work / "uWSGI.sock"), *common,
             "--buffer-size", "65535", "--die-on-term"],
            str(work / "uWSGI.sock"), uwsgi_pass.format(sock=work / "uWSGI.sock"), None),
        "proxy_pass keepalive + ngx-wsgi http": (
            [ngx_wsgi, "--http-socket", f"127.0.0.1:{http_port}", *common],
            ("127.0.0.1", http_port), proxy_pass.format(name="ngx_wsgi_http"),
            f"upstream ngx_wsgi_http {{ server 127.0.0.1:{http_port}; keepalive 32; }}"),
        "proxy_pass keepalive + Granian": (
            [str(ROOT / ".venv" / "bin" / "granian"), "--interface", "wsgi", "--workers", procs_n, "--host",
             "127.0.0.1", "--port", str(granian_port), "--http", "1", "--no-ws", "--no-log", "app:application"],
            ("127.0.0.1", granian_port), proxy_pass.format(name="granian"),
            f"upstream granian {{ server 127.0.0.1:{granian_port}; keepalive 32; }}"),
    }
    if args.static_bin:
        # Backends start in bench/: a path relative to where the script was run from.
        args.static_bin = str(pathlib.Path(args.static_bin).resolve())
        targets["wsgi_app + ngx-wsgi, Python linked statically"] = (
            [args.static_bin, str(one_config("static"))], str(work / "static.sock"),
            f"wsgi_app {work / 'static.ini'};", None)
    targets = {name: t for name, t in targets.items() if not args.only or any(o in name for o in args.only)}
    baseline = "uwsgi_pass + uWSGI"
    procs, ports, results, nginx = {}, {}, {}, None
    # Whatever was started is stopped, even when a later start fails.
    try:
        for i, (name, (cmd, ready, _, _)) in enumerate(targets.items()):
            procs[name] = subprocess.Popen(cmd, cwd=ROOT / "bench", stdout=subprocess.DEVNULL,
                                           stderr=open(work / f"backend-{i}.log", "wb"), start_new_session=True)
            wait_ready(ready, procs[name])
        servers, upstreams = [], []
        for i, (name, (_, _, location, upstream)) in enumerate(targets.items()):
            ports[name] = 18080 + i
            servers.append(f"server {{ listen 127.0.0.1:{ports[name]} backlog=1024; location / {{ {location} }} }}")
            if upstream:
                upstreams.append(upstream)
        module = ROOT / "target" / "release" / "libngx_http_wsgi_module.so"
        (work / "nginx.conf").write_text(f"""
            load_module {module};
            user root; worker_processes {args.nginx_workers}; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
            events {{ worker_connections 4096; }}
            http {{ access_log off; client_body_temp_path {work}/body; client_body_buffer_size 64k;
                   {' '.join(upstreams)} {' '.join(servers)} }}""")
        nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                                 start_new_session=True)
        time.sleep(1)
        nginx_pids = [p for p in tree(nginx.pid) if p != nginx.pid]

        for workload, (path, extra) in workloads.items():
            for _ in range(args.rounds):
                for name in targets:
                    backend = tree(procs[name].pid)
                    before = cpu_seconds(backend), cpu_seconds(nginx_pids), client_cpu_seconds()
                    idle_before = idle_and_total_ticks()
                    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                                          *extra, f"http://127.0.0.1:{ports[name]}{path}"],
                                         capture_output=True, text=True, check=True).stdout
                    after = cpu_seconds(tree(procs[name].pid)), cpu_seconds(nginx_pids), client_cpu_seconds()
                    idle_after = idle_and_total_ticks()
                    n, rps, p99, errors = parse_wrk(out)
                    idle = (idle_after[0] - idle_before[0]) / max(idle_after[1] - idle_before[1], 1) * 100
                    results.setdefault((workload, name), []).append(
                        (rps, p99, *((a - b) / n * 1e6 for a, b in zip(after, before)), idle, errors))
        rss = {name: peak_rss_kib([p for p in tree(procs[name].pid) if p != procs[name].pid]) for name in targets}
    finally:
        stop(nginx, list(procs.values()))
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.rounds} interleaved rounds of {args.duration} s, wrk -t1 -c{args.connections}, "
          f"{args.processes} processes per backend, nginx {args.nginx_workers} worker(s); medians\n")
    print("| workload | stack | requests/s | p99 ms | backend CPU µs/req | nginx CPU µs/req | wrk CPU µs/req "
          "| CPU idle % | errors | req/s vs uWSGI stack | CPU/req of uWSGI's stack over this one's |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workload in workloads:
        medians = {name: [statistics.median(r[i] for r in results[(workload, name)]) for i in range(6)]
                   for name in targets}
        base = medians.get(baseline)
        for name in targets:
            med = medians[name]
            errs = sum(r[6] for r in results[(workload, name)])
            ratio = f"{med[0] / base[0]:.2f}" if base else "-"
            # The most this stack's requests/s could gain on the baseline's on these cores.
            bound = f"{sum(base[2:5]) / sum(med[2:5]):.2f}" if base else "-"
            print(f"| {workload} | {name} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.1f} | {med[3]:.1f} | {med[4]:.1f} "
                  f"| {med[5]:.0f} | {errs} | {ratio} | {bound} |")
    print("\npeak RSS per worker (VmHWM): " + ", ".join(f"{n} {kib / 1024:.1f} MiB" for n, kib in rss.items()))


if __name__ == "__main__":
    main()
