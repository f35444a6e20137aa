#!/usr/bin/env bash
# Installs what building needs (`setup.sh build`: Debian's build packages) or what the
# tests and the demo need too (`setup.sh test`: nginx, load and network tools, debootstrap
# and lintian for the packages' test, and .venv with the PyPI packages the tests use), or
# what `make deb` needs besides building (`setup.sh deb`), on Debian 12 as root. Safe to run again: it only
# installs what is missing. It never stops, disables or restarts a running nginx (the
# tests and the demo run nginx from their own prefixes), and `make`, `make build` and
# `make install` only ever run the build part.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

# Building: the module compiles against nginx-dev's sources; the daemon embeds python3.
# (Rust itself comes from rustup: scripts/check-toolchain.sh says how.)
case "$what" in
  build) packages=(gcc nginx-dev libpcre2-dev libssl-dev zlib1g-dev python3 python3-dev libclang-dev pkg-config) ;;
  # dpkg-shlibdeps finds the packages the binaries link to; help2man makes the man page.
  deb) packages=(dpkg-dev help2man) ;;
  test) packages=(gcc nginx-dev libpcre2-dev libssl-dev zlib1g-dev python3 python3-dev libclang-dev pkg-config
                  nginx python3-venv iproute2 wrk curl systemd logrotate dpkg-dev help2man debootstrap lintian) ;;
  *) echo "setup: unknown part '$what' (build, deb or test)" >&2; exit 2 ;;
esac
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (or install them yourself): apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$what" = test ] || exit 0

# The venv is made from Debian's python3, the interpreter ngx-wsgi embeds.
stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt "$stamp"; then
  echo "setup: creating .venv with tests/requirements.txt"
  /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi
