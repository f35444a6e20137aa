#!/usr/bin/env bash
# Syscalls per request of one daemon worker on kept-alive connections from nginx's
# wsgi_pass (upstream keepalive), counted by strace -c: repeatable, unlike timings (strace
# slows the worker, so requests/s here mean nothing). One worker, one thread, wrk with one
# connection for a few seconds. Usage: bench/syscalls.sh [PATH] (default /hello);
# NGX_WSGI_BIN=/path/to/ngx-wsgi measures another build.
set -euo pipefail
for tool in strace wrk nginx curl; do
  command -v "$tool" > /dev/null || { echo "bench/syscalls.sh needs $tool (apt-get install strace wrk nginx curl)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
path=${1:-/hello}
work=$(mktemp -d /tmp/ngx-wsgi-syscalls.XXXXXX)
daemon=
cleanup() {
  nginx -p "$work" -c "$work/nginx.conf" -s quit 2>/dev/null || true
  [ -z "$daemon" ] || kill -INT "$daemon" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/nginx.conf" <<CONF
load_module $root/target/release/libngx_http_wsgi_module.so;
user root; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http { access_log off; client_body_temp_path $work/body;
  upstream app { server unix:$work/app.sock; keepalive 8; }
  server { listen 127.0.0.1:18412; location / { wsgi_pass app; } } }
CONF
"${NGX_WSGI_BIN:-$root/target/release/ngx-wsgi}" --socket "$work/app.sock" --wsgi-file "$root/bench/app.py" \
  --disable-logging > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do [ -S "$work/app.sock" ] && break; sleep 0.1; done
nginx -p "$work" -c "$work/nginx.conf"
curl -s -o /dev/null "http://127.0.0.1:18412$path"
worker=$(pgrep -P "$daemon" | head -1)
strace -f -c -p "$worker" -o "$work/strace.txt" 2> /dev/null &
tracer=$!
sleep 1
requests=$(wrk -t1 -c1 -d3s "http://127.0.0.1:18412$path" | awk '/requests in/ {print $1}')
sleep 0.5
kill -INT "$tracer"
wait "$tracer" || true
printf '%s: %s requests\n| syscall | calls | errors | per request |\n|---|---:|---:|---:|\n' "$path" "$requests"
awk -v n="$requests" '$NF ~ /^[a-z_0-9]+$/ && $NF != "syscall" && $NF != "total" && NF >= 5 {
  errors = (NF == 6) ? $5 : 0
  printf "| %s | %d | %d | %.2f |\n", $NF, $4, errors, $4 / n; total += $4 }
  END { printf "| all | %d | | %.2f |\n", total, total / n }' "$work/strace.txt"
