#!/usr/bin/env bash
# Prepares the nginx build directory the module is compiled against, and prints its path.
#
# The module must match the nginx that loads it (nginx checks a signature of its build
# options). By default that is Debian's nginx: the nginx-dev sources in
# /usr/share/nginx/src, configured with the flags Debian built nginx with (conf_flags),
# in .build/nginx. Set NGINX_BUILD_DIR to an already configured objs/ directory of
# another nginx (./configure --with-compat ...) to build for that one instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NGINX_BUILD_DIR:-}" ]; then
  echo "$NGINX_BUILD_DIR"
  exit 0
fi
src=/usr/share/nginx/src
dest=.build/nginx
if [ ! -f "$dest/objs/ngx_auto_config.h" ] || ! cmp -s "$src/conf_flags" "$dest/conf_flags"; then
  rm -rf "$dest"
  mkdir -p .build
  cp -r "$src" "$dest"
  # shellcheck disable=SC1091  # defines NGX_CONF_FLAGS, Debian's configure arguments
  source "$dest/conf_flags"
  (cd "$dest" && ./configure "${NGX_CONF_FLAGS[@]}" >configure.log 2>&1) || {
    echo "nginx-objs: configure failed, see $dest/configure.log" >&2
    exit 1
  }
fi
echo "$(pwd)/$dest/objs"
