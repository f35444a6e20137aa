#!/usr/bin/env bash
# Instructions per call of bench/app.py's app (no server, no socket), counted by callgrind
# in each way of running Debian's CPython 3.11: /usr/bin/python3.11 itself (where uWSGI's
# pyuwsgi, gunicorn and Granian run apps), embedded with the shared libpython3.11.so (the
# daemon's default build) and embedded with the static libpython3.11.a in a non-PIE
# executable (`make static-daemon`). The difference of a short and a long run leaves
# start-up out. Usage: bench/interpreter.sh [PATH] (default /flask/world).
set -euo pipefail
for tool in valgrind callgrind_annotate gcc python3.11-config; do
  command -v "$tool" > /dev/null || { echo "bench/interpreter.sh needs $tool (apt-get install valgrind gcc libpython3.11-dev)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
root=$(pwd)
path=${1:-/flask/world}
work=$(mktemp -d /tmp/ngx-wsgi-interpreter.XXXXXX)
trap 'rm -rf "$work"' EXIT
includes=$(/usr/bin/python3.11-config --includes)
archive=$(/usr/bin/python3.11 -c 'import sysconfig; print(sysconfig.get_config_var("LIBPL"))')/libpython3.11.a
# shellcheck disable=SC2086 # the flags are words
gcc -O2 $includes bench/embed.c -o "$work/embed-shared" -L/usr/lib/x86_64-linux-gnu -lpython3.11
# Exported symbols: the stdlib's and the venv's extension modules resolve CPython's from
# the executable, as in python3.11.
# shellcheck disable=SC2086
gcc -O2 -no-pie -fno-pie -Wl,-export-dynamic $includes bench/embed.c -o "$work/embed-static" \
  "$archive" -lm -lz -lexpat -ldl -lpthread -lutil
instructions() { # $1: label, rest: command; prints instructions per call
  local label=$1 short long
  shift
  for count in 200 1200; do
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.$count" "$@" bench/app_loop.py "$path" "$count" \
      > /dev/null 2> "$work/$label.$count.log" || { cat "$work/$label.$count.log" >&2; exit 1; }
  done
  short=$(callgrind_annotate "$work/$label.200" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  long=$(callgrind_annotate "$work/$label.1200" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo $(( (long - short) / 1000 ))
}
python=$(instructions python3.11 /usr/bin/python3.11)
echo "| CPython 3.11 run as | instructions per call of the app ($path) | against python3.11 |"
echo "|---|---:|---:|"
echo "| /usr/bin/python3.11 | $python | 1.00 |"
for build in static shared; do
  n=$(instructions "$build" "$work/embed-$build")
  echo "| embedded, $build libpython | $n | $(awk -v a="$n" -v b="$python" 'BEGIN { printf "%.2f", a / b }') |"
done
