#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS
# (default 60) each, starting from the seeds in fuzz/seeds/ and keeping what it finds in
# fuzz/corpus/ (and crashes in fuzz/artifacts/). Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes the sanitizer flags of nightly rustc; the one toolchain here is
# stable, which accepts them this way.
export RUSTC_BOOTSTRAP=1
mkdir -p /tmp/ngx-wsgi-fuzz
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==|SUMMARY)|panicked|ERROR" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found inputs that fail: fuzz/artifacts/$target" >&2
    exit 1
  fi
done
