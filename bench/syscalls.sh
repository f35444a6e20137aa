#!/usr/bin/env bash
# Syscalls per request on kept-alive connections between nginx and the daemon, counted
# by strace -c: repeatable, unlike timings (strace slows the traced process, so
# requests/s here mean nothing). One daemon worker with one thread (or SIDE=nginx: nginx's
# one worker) while wrk runs a few seconds.
# Usage: bench/syscalls.sh [PATH] (default /hello). Environment:
#   SIDE=daemon|nginx       whose system calls are counted (daemon)
#   LOCATION=wsgi_pass|wsgi_app   wsgi_pass to an upstream with keepalive 8, or wsgi_app
#                           with the daemon's config (its own buffers) (wsgi_pass)
#   CONNECTIONS=N           wrk's connections (1)
#   BODY_KIB=N              POST a body of N KiB to PATH (none: GET)
#   NGINX_HTTP='...'        more directives for nginx's http block
#   NGX_WSGI_BIN=/path/to/ngx-wsgi measures another build.
set -euo pipefail
for tool in strace wrk nginx curl; do
  command -v "$tool" > /dev/null || { echo "bench/syscalls.sh needs $tool (apt-get install strace wrk nginx curl)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
path=${1:-/hello}
side=${SIDE:-daemon}
work=$(mktemp -d /tmp/ngx-wsgi-syscalls.XXXXXX)
daemon=
cleanup() {
  nginx -p "$work" -c "$work/nginx.conf" -s quit 2>/dev/null || true
  [ -z "$daemon" ] || kill -INT "$daemon" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# One daemon worker to trace; nginx's side is traced with the bench's 2 (bench/run.py).
processes=1
[ "$side" = daemon ] || processes=2
printf '[uwsgi]\nsocket = %s\nwsgi-file = %s\nprocesses = %s\ndisable-logging = true\n' \
  "$work/app.sock" "$root/bench/app.py" "$processes" > "$work/app.ini"
case ${LOCATION:-wsgi_pass} in
  wsgi_pass) upstream="upstream app { server unix:$work/app.sock; keepalive 8; }"; location="wsgi_pass app;" ;;
  wsgi_app) upstream=""; location="wsgi_app $work/app.ini;" ;;
  *) echo "LOCATION is wsgi_pass or wsgi_app" >&2; exit 2 ;;
esac
cat > "$work/nginx.conf" <<CONF
load_module $root/target/release/libngx_http_wsgi_module.so;
user root; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http { access_log off; client_body_temp_path $work/body; ${NGINX_HTTP:-}
  $upstream
  server { listen 127.0.0.1:18412; location / { $location } } }
CONF
wrk_script=()
if [ -n "${BODY_KIB:-}" ]; then
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' "$((BODY_KIB * 1024))" > "$work/post.lua"
  wrk_script=(-s "$work/post.lua")
fi
"${NGX_WSGI_BIN:-$root/target/release/ngx-wsgi}" --ini "$work/app.ini" > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do [ -S "$work/app.sock" ] && break; sleep 0.1; done
nginx -p "$work" -c "$work/nginx.conf"
curl -s -o /dev/null "http://127.0.0.1:18412$path"
case $side in
  daemon) traced=$(pgrep -P "$daemon" | head -1) ;;
  nginx) traced=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1) ;;
  *) echo "SIDE is daemon or nginx" >&2; exit 2 ;;
esac
strace -f -c -p "$traced" -o "$work/strace.txt" 2> /dev/null &
tracer=$!
sleep 1
requests=$(wrk -t1 "-c${CONNECTIONS:-1}" -d3s "${wrk_script[@]}" "http://127.0.0.1:18412$path" | awk '/requests in/ {print $1}')
sleep 0.5
kill -INT "$tracer"
wait "$tracer" || true
printf '%s (%s, %s side, %s connections%s): %s requests\n' "$path" "${LOCATION:-wsgi_pass}" "$side" \
  "${CONNECTIONS:-1}" "${BODY_KIB:+, POST of $BODY_KIB KiB}" "$requests"
printf '| syscall | calls | errors | per request |\n|---|---:|---:|---:|\n'
awk -v n="$requests" '$NF ~ /^[a-z_0-9]+$/ && $NF != "syscall" && $NF != "total" && NF >= 5 {
  errors = (NF == 6) ? $5 : 0
  printf "| %s | %d | %d | %.2f |\n", $NF, $4, errors, $4 / n; total += $4 }
  END { printf "| all | %d | | %.2f |\n", total, total / n }' "$work/strace.txt"
