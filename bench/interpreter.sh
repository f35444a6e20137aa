#!/usr/bin/env bash
# Instructions per call of bench/app.py's app (no server, no socket), counted by callgrind
# in each way of running Debian's CPython 3.11: /usr/bin/python3.11 itself (where uWSGI's
# pyuwsgi, gunicorn and Granian run apps), embedded with the shared libpython3.11.so (the
# daemon's default build) and embedded with the static libpython3.11.a, whole, in a
# non-PIE executable (as `make static-daemon` links it). The difference of a short and a
# long run leaves start-up out. Usage: bench/interpreter.sh [PATH] (default /flask/world).
set -euo pipefail
python=/usr/bin/python3.11
for tool in valgrind callgrind_annotate gcc "$python"; do
  command -v "$tool" > /dev/null || { echo "bench/interpreter.sh needs $tool (apt-get install valgrind gcc python3.11)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
[ -d .venv ] || { echo "bench/interpreter.sh needs the project's venv (make setup)" >&2; exit 1; }
path=${1:-/flask/world}
work=$(mktemp -d /tmp/ngx-wsgi-interpreter.XXXXXX)
trap 'rm -rf "$work"' EXIT
include=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("INCLUDEPY"))')
archive=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBPL"))')/libpython3.11.a
for file in "$include/Python.h" "$archive"; do
  [ -e "$file" ] || { echo "bench/interpreter.sh needs $file (apt-get install libpython3.11-dev)" >&2; exit 1; }
done
gcc -O2 -I"$include" bench/embed.c -o "$work/embed-shared" -lpython3.11
# Exported symbols: the stdlib's and the venv's extension modules resolve CPython's from
# the executable, as in python3.11; the whole archive, so none of them misses one.
gcc -O2 -no-pie -fno-pie -Wl,-export-dynamic -I"$include" bench/embed.c -o "$work/embed-static" \
  -Wl,--whole-archive "$archive" -Wl,--no-whole-archive -lm -lz -lexpat -ldl -lpthread -lutil
# The same hash seed in every run: the short and the long run's start-up cancel out.
export PYTHONHASHSEED=0
instructions() { # $1: label, rest: command; prints instructions per call
  local label=$1 count total
  local -a totals=()
  shift
  for count in 200 1200; do
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.$count" "$@" bench/app_loop.py "$path" "$count" \
      > /dev/null 2> "$work/$label.$count.log" || { cat "$work/$label.$count.log" >&2; exit 1; }
    total=$(callgrind_annotate "$work/$label.$count" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    [[ $total =~ ^[0-9]+$ ]] || { echo "bench/interpreter.sh: no total in callgrind's output for $label" >&2; exit 1; }
    totals+=("$total")
  done
  echo $(( (totals[1] - totals[0]) / 1000 ))
}
base=$(instructions python3.11 "$python")
echo "| CPython 3.11 run as | instructions per call of the app ($path) | against python3.11 |"
echo "|---|---:|---:|"
echo "| $python | $base | 1.00 |"
for build in static shared; do
  n=$(instructions "$build" "$work/embed-$build")
  echo "| embedded, $build libpython | $n | $(awk -v a="$n" -v b="$base" 'BEGIN { printf "%.2f", a / b }') |"
done
