#!/usr/bin/env bash
# `make demo`: the example app (example/app.py) served by ngx-wsgi behind Debian's nginx
# on http://127.0.0.1:8080/, in the foreground until Ctrl-C. nginx runs from its own
# prefix under .build/demo, never as the system service.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo=$root/.build/demo
run=/run/ngx-wsgi-demo
socket=$run/app.sock
mkdir -p "$demo/logs" "$run"
module=$root/target/release/libngx_http_wsgi_module.so
sed -e "s|@DEMO@|$demo|g" -e "s|@SOCKET@|$socket|g" -e "s|@MODULE@|$module|g" \
  nginx-conf/demo-nginx.conf > "$demo/nginx.conf"

# nginx's workers run as www-data: the socket is handed to that user, as in production.
"$root/target/release/ngx-wsgi" --master --processes 2 --socket "$socket" \
  --chown-socket www-data:www-data --chmod-socket 660 --vacuum \
  --wsgi-file "$root/example/app.py" &
daemon=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
nginx -p "$demo" -c "$demo/nginx.conf" -g 'daemon off;' &
nginx=$!
stop() {
  trap - INT TERM EXIT
  kill -TERM "$daemon" 2>/dev/null || true
  kill -QUIT "$nginx" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
echo "ngx-wsgi demo: http://127.0.0.1:8080/ (nginx -> wsgi_pass -> ngx-wsgi); Ctrl-C stops"
wait -n "$daemon" "$nginx"
