#!/usr/bin/env bash
# Instructions per request of nginx's worker, counted by callgrind, for each way nginx
# reaches a Python backend: our module's wsgi_pass with upstream keepalive (to ngx-wsgi),
# proxy_pass with upstream keepalive (to ngx-wsgi's HTTP listener) and stock uwsgi_pass
# (to uWSGI, the classic stack). One nginx process (master_process off) runs under
# callgrind; for each location the counters are zeroed after a warm-up, wrk sends PATH
# on one connection for a few seconds, and the counters are dumped: instructions per
# request, and those of the upstream's create_request (inclusive; ours only, Debian's
# nginx has no symbols).
# Usage: bench/callgrind-nginx.sh [PATH ...] (default /hello /64k /echo with a 16 KiB POST);
# NGX_WSGI_MODULE=/path/to/module.so measures another build of the module.
set -euo pipefail
for tool in valgrind callgrind_annotate callgrind_control wrk nginx; do
  command -v "$tool" > /dev/null || { echo "bench/callgrind-nginx.sh needs $tool (apt-get install valgrind wrk nginx)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/ngx-wsgi-callgrind-nginx.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done
  pkill -9 -f "callgrind-out-file=$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(/hello /64k /echo)
app=$root/bench/app.py
bin=${NGX_WSGI_BIN:-$root/target/release/ngx-wsgi}
common=(--processes 1 --master --disable-logging --wsgi-file "$app")
setsid "$bin" --socket "$work/ngx-wsgi.sock" "${common[@]}" > "$work/ngx-wsgi.log" 2>&1 & pids+=($!)
setsid "$bin" --http-socket 127.0.0.1:18311 "${common[@]}" > "$work/ngx-wsgi-http.log" 2>&1 & pids+=($!)
setsid "$root/.venv/bin/uwsgi" --socket "$work/uWSGI.sock" "${common[@]}" --buffer-size 65535 --die-on-term \
  > "$work/uWSGI.log" 2>&1 & pids+=($!)
ready=false
for _ in $(seq 100); do
  if [ -S "$work/ngx-wsgi.sock" ] && [ -S "$work/uWSGI.sock" ] && (: < /dev/tcp/127.0.0.1/18311) 2> /dev/null; then
    ready=true; break
  fi
  sleep 0.2
done
$ready || { echo "a backend did not start (port 18311 taken?): $(cat "$work"/*.log)" >&2; exit 1; }
cat > "$work/nginx.conf" <<CONF
load_module ${NGX_WSGI_MODULE:-$root/target/release/libngx_http_wsgi_module.so};
master_process off; daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http {
  access_log off; client_body_temp_path $work/body; client_body_buffer_size 64k;
  upstream wsgi { server unix:$work/ngx-wsgi.sock; keepalive 32; }
  upstream http { server 127.0.0.1:18311; keepalive 32; }
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
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
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
printf '| path | nginx to backend | requests | nginx instructions/request | of which create_request |\n|---|---|---:|---:|---:|\n'
for path in "${paths[@]}"; do
  extra=()
  [ "$path" = /echo ] && extra=(-s "$work/post.lua")
  for target in "wsgi_pass keepalive:18310:wsgi_module" "proxy_pass keepalive:18312:proxy_create_request" "uwsgi_pass:18313:uwsgi_create_request"; do
    IFS=: read -r name port create <<< "$target"
    wrk -t1 -c1 -d1s "${extra[@]}" "http://127.0.0.1:$port$path" > /dev/null
    callgrind_control -z "$nginx_pid" > /dev/null 2>&1
    wrk -t1 -c1 -d4s "${extra[@]}" "http://127.0.0.1:$port$path" > "$work/wrk.out"
    if grep -qE "Non-2xx|Socket errors" "$work/wrk.out"; then
      echo "$name $path: not every request was answered 2xx:" >&2; cat "$work/wrk.out" >&2; exit 1
    fi
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    callgrind_control -d "$nginx_pid" > /dev/null 2>&1
    sleep 1
    out=$(ls -t "$work"/callgrind.out.* | head -1)
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    if [ "$create" = wsgi_module ]; then
      create_ir=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '!found && /upstream::create_request[^_]/ {found = 1; gsub(",", "", $1); print $1}')
    else
      create_ir=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk -v f="ngx_http_$create" '!found && $0 ~ f {found = 1; gsub(",", "", $1); print $1}')
    fi
    # Debian's nginx has no symbols (without its -dbgsym package): its modules' functions
    # have no names to count by.
    create_per=${create_ir:+$((create_ir / requests))}
    printf '| %s | %s | %s | %s | %s |\n' "$path" "$name" "$requests" "$((total / requests))" "${create_per:-n/a}"
  done
done
