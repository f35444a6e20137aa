#!/usr/bin/env bash
# Instructions per request of the whole stack, counted by callgrind, for each way nginx
# reaches a Python backend: our module's wsgi_pass with upstream keepalive (to ngx-wsgi),
# proxy_pass with upstream keepalive (to ngx-wsgi's HTTP listener) and stock uwsgi_pass
# (to uWSGI, the classic stack); and wsgi_app, which passes to the same ngx-wsgi as
# wsgi_pass with the buffers it chooses (its worker is the wsgi_pass row's). nginx (one process, master_process off) runs under
# callgrind: for each target its counters are zeroed after a warm-up, wrk sends PATH on
# one connection for a few seconds, and they are dumped. Then each backend's worker (one
# worker, one thread) is measured under callgrind as phase 2 below says. Printed:
# instructions per request on each side and in all, and those of our create_request
# (inclusive; Debian's nginx has no symbols for its own modules'). Repeatable whatever
# else the machine is doing, unlike timings. Takes a few minutes.
# Usage: bench/callgrind-stack.sh [PATH ...] (default /hello /64k /echo with a 16 KiB POST);
# NGX_WSGI_MODULE=/path/to/module.so measures another build of the module.
set -euo pipefail
for tool in valgrind callgrind_annotate callgrind_control wrk nginx; do
  command -v "$tool" > /dev/null || { echo "bench/callgrind-stack.sh needs $tool (apt-get install valgrind wrk nginx)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/ngx-wsgi-callgrind-stack.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done
  pkill -9 -f "callgrind-out-file=$work" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(/hello /64k /echo)
app=$root/bench/app.py
bin=${NGX_WSGI_BIN:-$root/target/release/ngx-wsgi}
common=(--processes 1 --master --disable-logging --wsgi-file "$app" --virtualenv "$root/.venv")
# Backends run under callgrind only for their own measurement (phase 2); here plainly.
plain() { setsid "${@:2}" > "$work/$1.log" 2>&1 & pids+=($!); }
start_backends() {
  local how=$1 wanted=${2:-all}
  if [ "$wanted" = all ] || [ "$wanted" = ngx-wsgi ]; then $how ngx-wsgi "$bin" "$work/ngx-wsgi.ini"; fi
  if [ "$wanted" = all ]; then $how ngx-wsgi-http "$bin" --http-socket 127.0.0.1:18311 "${common[@]}"; fi
  if [ "$wanted" = all ] || [ "$wanted" = uWSGI ]; then
    $how uWSGI "$root/.venv/bin/python" "$root/.venv/bin/uwsgi" --socket "$work/uWSGI.sock" "${common[@]}" \
      --buffer-size 65535 --die-on-term
  fi
}
wait_backends() {
  for _ in $(seq 600); do
    if [ -S "$work/ngx-wsgi.sock" ] && [ -S "$work/uWSGI.sock" ] && (: < /dev/tcp/127.0.0.1/18311) 2> /dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "a backend did not start (port 18311 taken?): $(cat "$work"/*.log)" >&2; exit 1
}
# ngx-wsgi reads the file nginx's wsgi_app reads: "${common[@]}" written as an INI (an
# option without a value is a flag).
{
  echo "[uwsgi]"
  echo "socket = $work/ngx-wsgi.sock"
  for ((i = 0; i < ${#common[@]}; i++)); do
    name=${common[i]#--} value=true
    if [ $((i + 1)) -lt ${#common[@]} ] && [[ ${common[i + 1]} != --* ]]; then value=${common[i + 1]}; i=$((i + 1)); fi
    echo "$name = $value"
  done
} > "$work/ngx-wsgi.ini"
start_backends plain
wait_backends
cat > "$work/nginx.conf" <<CONF
load_module ${NGX_WSGI_MODULE:-$root/target/release/libngx_http_wsgi_module.so};
master_process off; daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http {
  access_log off; client_body_temp_path $work/body; client_body_buffer_size 64k;
  upstream wsgi { server unix:$work/ngx-wsgi.sock; keepalive 32; }
  upstream http { server 127.0.0.1:18311; keepalive 32; }
  server { listen 127.0.0.1:18314; location / { wsgi_app $work/ngx-wsgi.ini; } }
  server { listen 127.0.0.1:18310 backlog=1024; listen 127.0.0.1:18312; listen 127.0.0.1:18313;
    location / {
      if (\$server_port = 18310) { wsgi_pass wsgi; }
      if (\$server_port = 18312) { proxy_pass http://http; }
      include /etc/nginx/uwsgi_params; uwsgi_pass unix:$work/uWSGI.sock;
      proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}
CONF
valgrind --tool=callgrind --callgrind-out-file="$work/nginx.out" \
  nginx -p "$work" -c "$work/nginx.conf" > "$work/valgrind.log" 2>&1 &
nginx_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:18313/hello" && break
  sleep 0.5
done
body=$(mktemp "$work/body.XXXX"); head -c 16384 /dev/zero | tr '\0' x > "$body"
cat > "$work/post.lua" <<LUA
local f = io.open("$body", "rb"); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
LUA
# The total of the last dump of a callgrind output file set ($1: its name's prefix).
last_total() {
  local out
  out=$(ls -t "$1".* | head -1)
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
# wrk on one connection for $2 seconds, on target port $1 and path $3; fails on any
# answer but 2xx; prints the request count.
measure() {
  local extra=()
  [ "$3" = /echo ] && extra=(-s "$work/post.lua")
  wrk -t1 -c1 -d"$2"s "${extra[@]}" "http://127.0.0.1:$1$3" > "$work/wrk.out"
  if grep -qE "Non-2xx|Socket errors" "$work/wrk.out"; then
    echo "port $1 $3: not every request was answered 2xx:" >&2; cat "$work/wrk.out" >&2; exit 1
  fi
  awk '/requests in/ {print $1}' "$work/wrk.out"
}
# Phase 1: nginx's instructions per request, its counters zeroed and dumped around wrk.
declare -A nginx_per create_per
for path in "${paths[@]}"; do
  for port in 18310 18314 18312 18313; do
    measure "$port" 1 "$path" > /dev/null
    callgrind_control -z "$nginx_pid" > /dev/null 2>&1
    requests=$(measure "$port" 4 "$path")
    callgrind_control -d "$nginx_pid" > /dev/null 2>&1
    sleep 1
    nginx_per[$port$path]=$(($(last_total "$work/nginx.out") / requests))
    create_per[$port$path]=n/a
    if [ "$port" = 18310 ] || [ "$port" = 18314 ]; then
      create_per[$port$path]=$(callgrind_annotate --inclusive=yes "$(ls -t "$work"/nginx.out.* | head -1)" 2>/dev/null \
        | awk -v n="$requests" '!found && /upstream::create_request[^_]/ {found = 1; gsub(",", "", $1); print int($1 / n)}')
    fi
  done
done
# Phase 2: a backend worker's instructions per request. A forked worker cannot be zeroed
# from outside (callgrind_control does not see it), so each backend is run twice under
# callgrind, with 2 s and then 8 s of requests: the difference of the worker's totals,
# over the difference of the request counts, leaves start-up and exit out.
declare -A worker_per
worker_total() { # $1: backend name; the worker is the process of the set that ran most
  local most=0 ir
  for out in "$work/grind-$1".*; do
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    [ "${ir:-0}" -gt "$most" ] && most=$ir
  done
  echo "$most"
}
for path in "${paths[@]}"; do
  for target in 18310:ngx-wsgi 18313:uWSGI; do
    IFS=: read -r port name <<< "$target"
    # What the backend's command line holds, to find its processes.
    cmdline=$work/uWSGI.sock
    [ "$name" = ngx-wsgi ] && cmdline=$work/ngx-wsgi.ini
    totals=() counts=()
    for seconds in 2 8; do
      pkill -INT -f "$cmdline" || true
      for _ in $(seq 100); do pgrep -f "$cmdline" > /dev/null || break; sleep 0.2; done
      rm -f "$work/$name.sock" "$work/grind-$name".*
      # --trace-children: ngx-wsgi replaces itself with the Python it runs in (python_host.rs).
      grind() { setsid valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$work/grind-$1.%p" "${@:2}" > "$work/$1.log" 2>&1 & }
      start_backends grind "$name"
      wait_backends
      # nginx's cached connection to the previous run is gone: a GET finds out.
      for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$port/hello"; done
      counts+=("$(measure "$port" "$seconds" "$path")")
      pkill -INT -f "$cmdline" || true
      for _ in $(seq 150); do pgrep -f "$cmdline" > /dev/null || break; sleep 0.2; done
      totals+=("$(worker_total "$name")")
    done
    worker_per[$port$path]=$(( (totals[1] - totals[0]) / (counts[1] - counts[0]) ))
  done
done
printf '| path | stack | nginx instructions/request | of which create_request | backend worker instructions/request | whole stack |\n|---|---|---:|---:|---:|---:|\n'
for path in "${paths[@]}"; do
  for target in "18310:wsgi_pass keepalive + ngx-wsgi" "18314:wsgi_app + ngx-wsgi (its buffers)" "18312:proxy_pass keepalive + ngx-wsgi http" "18313:uwsgi_pass + uWSGI"; do
    IFS=: read -r port name <<< "$target"
    worker=${worker_per[$port$path]:-}
    [ "$port" = 18314 ] && worker=${worker_per[18310$path]:-}
    whole=${worker:+$((nginx_per[$port$path] + worker))}
    printf '| %s | %s | %s | %s | %s | %s |\n' "$path" "$name" "${nginx_per[$port$path]}" "${create_per[$port$path]}" \
      "${worker:-n/a}" "${whole:-n/a}"
  done
done
