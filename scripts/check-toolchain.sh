#!/usr/bin/env bash
# Checks, before anything is built, that the Rust toolchain is there and new enough, and
# says exactly what to do when it is not (instead of failing inside cargo).
#
# The minimum is the workspace's rust-version (Cargo.toml), the newest that any crate in
# Cargo.lock declares. Debian 12's own rustc (1.63) is older: Rust comes from rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
rustc=${RUSTC:-rustc}
required=$(sed -n 's/^rust-version *= *"\([0-9.]*\)"/\1/p' Cargo.toml)

how_to_install="Rust >= $required is installed with rustup (Debian 12's rustc is 1.63, too old):

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . \"\$HOME/.cargo/env\"

then run make again (as the same user, so cargo is on PATH)."

if ! command -v "$cargo" >/dev/null 2>&1; then
  echo "make: cargo (Rust's build tool) was not found on PATH." >&2
  echo "$how_to_install" >&2
  exit 1
fi
if ! command -v "$rustc" >/dev/null 2>&1; then
  echo "make: rustc was not found on PATH, though $(command -v "$cargo") was." >&2
  echo "$how_to_install" >&2
  exit 1
fi

found=$("$rustc" --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
if [ -z "$found" ]; then
  echo "make: could not read the version of $(command -v "$rustc") ('$rustc --version' printed: $("$rustc" --version 2>&1 | head -1))." >&2
  exit 1
fi
# sort -V puts the older first: the found version is enough when the required one is.
if [ "$(printf '%s\n%s\n' "$required" "$found" | sort -V | head -1)" != "$required" ]; then
  echo "make: rustc $found ($(command -v "$rustc")) is older than the $required ngx-wsgi needs." >&2
  if [ "$(command -v "$rustc")" = /usr/bin/rustc ]; then
    echo "That is Debian's rustc; rustup's goes first on PATH once installed." >&2
  else
    echo "If it is rustup's: rustup update stable" >&2
  fi
  echo "$how_to_install" >&2
  exit 1
fi
