#!/usr/bin/env bash
# Instructions per request of one worker, ngx-wsgi and uWSGI side by side, counted by
# callgrind: repeatable whatever else the machine is doing, unlike timings. Each backend
# serves bench/app.py with one worker behind stock nginx uwsgi_pass; wrk sends PATH for a
# few seconds with one connection. Usage: bench/callgrind.sh [PATH ...] (default /hello /64k);
# NGX_WSGI_BIN=/path/to/ngx-wsgi measures another build (an earlier commit's, say);
# LOGGING=1 has both backends write their request log line for every request (to a file,
# with logto), as they do by default, instead of --disable-logging.
set -euo pipefail
for tool in valgrind callgrind_annotate wrk nginx; do
  command -v "$tool" > /dev/null || { echo "bench/callgrind.sh needs $tool (apt-get install valgrind wrk nginx)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/ngx-wsgi-callgrind.XXXXXX)
trap 'nginx -p "$work" -c "$work/nginx.conf" -s quit 2>/dev/null || true; pkill -9 -f "valgrind.bin --tool=callgrind --callgrind-out-file=$work" || true; rm -rf "$work"' EXIT
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(/hello /64k)
cat > "$work/nginx.conf" <<CONF
user root; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err; events {}
http { access_log off; client_body_temp_path $work/body;
  server { listen 127.0.0.1:18301; location / { include /etc/nginx/uwsgi_params; uwsgi_pass unix:$work/backend.sock; } } }
CONF
app=$root/bench/app.py
logging="--disable-logging"
[ "${LOGGING:-0}" = 1 ] && logging="--logto $work/requests.log"
declare -A command=(
  [ngx-wsgi]="${NGX_WSGI_BIN:-$root/target/release/ngx-wsgi} --socket $work/backend.sock --wsgi-file $app $logging"
  [uWSGI]="$root/.venv/bin/python $root/.venv/bin/uwsgi --socket $work/backend.sock --wsgi-file $app $logging --master --buffer-size 65535"
)
nginx -p "$work" -c "$work/nginx.conf"
printf '| path | backend | requests | instructions/request (worker) |\n|---|---|---:|---:|\n'
for path in "${paths[@]}"; do
  for backend in ngx-wsgi uWSGI; do
    rm -f "$work"/callgrind.* "$work/backend.sock"
    # shellcheck disable=SC2086
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" ${command[$backend]} \
      > "$work/$backend.log" 2>&1 &
    for _ in $(seq 120); do [ -S "$work/backend.sock" ] && break; sleep 0.5; done
    sleep 2
    requests=$(wrk -t1 -c1 -d6s "http://127.0.0.1:18301$path" | awk '/requests in/ {print $1}')
    pkill -INT -f "valgrind.bin --tool=callgrind --callgrind-out-file=$work" || true
    sleep 8
    pkill -9 -f "valgrind.bin --tool=callgrind --callgrind-out-file=$work" || true
    sleep 1
    # The worker is the process that executed the most instructions.
    most=0
    for out in "$work"/callgrind.*; do
      ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
      [ "${ir:-0}" -gt "$most" ] && most=$ir
    done
    printf '| %s | %s | %s | %s |\n' "$path" "$backend" "$requests" "$((most / requests))"
  done
done
