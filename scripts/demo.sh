#!/usr/bin/env bash
# `make demo`: the example app (example/app.py) served by ngx-wsgi behind Debian's nginx
# on http://127.0.0.1:8080/, in the foreground until Ctrl-C. nginx runs from its own
# prefix under .build/demo, never as the system service.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo=$root/.build/demo
config=$root/example/app.ini
socket=/run/ngx-wsgi-demo/app.sock # as the config says
mkdir -p "$demo/logs" "$(dirname "$socket")"
module=$root/target/release/libngx_http_wsgi_module.so
sed -e "s|@DEMO@|$demo|g" -e "s|@APP_CONFIG@|$config|g" -e "s|@MODULE@|$module|g" \
  nginx-conf/demo-nginx.conf > "$demo/nginx.conf"

# One config for both sides: checked on the daemon's side, then on nginx's.
"$root/target/release/ngx-wsgi" --check-config "$config" > /dev/null
nginx -t -q -p "$demo" -c "$demo/nginx.conf"
"$root/target/release/ngx-wsgi" "$config" &
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
echo "ngx-wsgi demo: http://127.0.0.1:8080/ (nginx -> wsgi_app -> ngx-wsgi, one config: example/app.ini); Ctrl-C stops"
wait -n "$daemon" "$nginx"
