#!/usr/bin/env bash
# Prepares the nginx build directory the module is compiled against, and prints its path.
#
# The module must match the nginx that loads it (nginx checks a signature of its build
# options). By default that is Debian's nginx: the nginx-dev sources in
# /usr/share/nginx/src, configured with the flags Debian built nginx with (conf_flags),
# in .build/nginx. For another nginx (an nginx.org mainline build, say):
#   NGINX_BUILD_DIR=/path/to/nginx-1.x.y/objs   an objs/ directory you configured, with
#                                               the arguments that nginx's `nginx -V` prints;
#   NGINX_SOURCE_DIR=/path/to/nginx-1.x.y       its sources: configured here, unless they
#                                               are already, with --with-compat (what
#                                               nginx.org's packages are built with) and
#                                               NGINX_CONFIGURE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NGINX_BUILD_DIR:-}" ]; then
  echo "$NGINX_BUILD_DIR"
  exit 0
fi
if [ -n "${NGINX_SOURCE_DIR:-}" ]; then
  if [ ! -f "$NGINX_SOURCE_DIR/src/core/nginx.h" ]; then
    echo "nginx-objs: NGINX_SOURCE_DIR=$NGINX_SOURCE_DIR holds no nginx sources (no src/core/nginx.h)" >&2
    exit 1
  fi
  if [ ! -f "$NGINX_SOURCE_DIR/objs/ngx_auto_config.h" ]; then
    # A release tarball has ./configure; a git checkout, auto/configure.
    configure=./configure
    [ -x "$NGINX_SOURCE_DIR/configure" ] || configure=auto/configure
    # shellcheck disable=SC2086  # NGINX_CONFIGURE_ARGS is a list of arguments
    (cd "$NGINX_SOURCE_DIR" && $configure --with-compat ${NGINX_CONFIGURE_ARGS:-} >configure.log 2>&1) || {
      echo "nginx-objs: configure failed, see $NGINX_SOURCE_DIR/configure.log" >&2
      exit 1
    }
  fi
  echo "$(cd "$NGINX_SOURCE_DIR" && pwd)/objs"
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
