#!/usr/bin/env bash
# Builds the two Debian packages from the release build (`make deb` builds first):
#
#   ngx-wsgi_VERSION+pyX.Y_ARCH.deb        the daemon, its systemd unit templates, the example
#                                          config (/etc/ngx-wsgi/example.ini) and its app, the
#                                          logrotate snippet, the man page (from --help)
#   libnginx-mod-http-wsgi_VERSION_ARCH.deb  the module and its modules-available snippet,
#                                          enabled on install as Debian's libnginx-mod-* are
#
# into target/debian/, with dpkg-deb (root-owned files, no fakeroot needed). Dependencies
# come from dpkg-shlibdeps (so the daemon depends on the exact libpython3.X it embeds) and,
# for the module, from the nginx ABI its nginx sources declare (Debian's nginx-dev:
# debian/libnginx-mod.abisubstvars, e.g. nginx-abi-1.22.1-7). A module built against other
# nginx sources has no such file: set NGINX_DEPENDS (e.g. "nginx (= 1.27.3-1~bookworm)").
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/ngx-wsgi
# The daemon as an extension module: the executable runs it inside /usr/bin/pythonX.Y.
host=target/release/ngx_wsgi_host.so
module=target/release/libngx_http_wsgi_module.so
out=target/debian
for built in "$bin" "$host" "$module"; do
  [ -f "$built" ] || { echo "deb: $built is missing: run make deb (it builds first)" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)

# Which Python the daemon embeds: the libpython it links to.
libpython=$(objdump -p "$bin" | sed -n 's/^ *NEEDED *\(libpython[0-9.]*\)\.so.*/\1/p')
python=${libpython#libpython}
if [ -z "$python" ]; then
  # A daemon built with PYTHON_LINK=static carries its interpreter: a package of it would
  # keep that interpreter through every Python security update apt installs.
  if nm "$bin" 2>/dev/null | grep -q ' T Py_Initialize$'; then
    echo "deb: $bin has Python linked in (PYTHON_LINK=static): the packages are built with" \
      "Python as a shared library, which Debian's Python security updates reach;" \
      "run make deb PYTHON_LINK=shared (the default)" >&2
  else
    echo "deb: $bin links to no libpython (objdump -p)" >&2
  fi
  exit 1
fi

# Which nginx the module is for: the sources it was compiled against.
nginx_objs=$(bash scripts/nginx-objs.sh)
nginx_src=$(dirname "$nginx_objs")
if [ -z "${NGINX_DEPENDS:-}" ]; then
  abi_file=$nginx_src/debian/libnginx-mod.abisubstvars
  if [ ! -f "$abi_file" ]; then
    echo "deb: the module was built against $nginx_src, which names no Debian nginx ABI" \
      "($abi_file is missing); set NGINX_DEPENDS to the nginx package it is for," \
      "e.g. NGINX_DEPENDS='nginx (= 1.27.3-1~bookworm)'" >&2
    exit 1
  fi
  NGINX_DEPENDS=$(sed -n 's/^nginx:abi=//p' "$abi_file")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ngx-wsgi-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
# dpkg-shlibdeps wants a source tree: a control file naming the packages.
printf 'Source: ngx-wsgi\n\nPackage: ngx-wsgi\nArchitecture: any\n\nPackage: libnginx-mod-http-wsgi\nArchitecture: any\n' \
  >"$work/debian/control"

# The files every package carries: copyright (with the statically linked crates) and the
# changelog, compressed as Debian's tools do (gzip -9n: reproducible).
common_docs() {
  local doc=$1
  install -d "$doc"
  {
    cat packaging/copyright.in
    cargo metadata --format-version 1 --locked --offline | python3 -c '
import json, sys
meta = json.load(sys.stdin)
ours = set(meta["workspace_members"])
for p in sorted(meta["packages"], key=lambda p: (p["name"], p["version"])):
    if p["id"] not in ours and p["source"]:
        print(" %s %s: %s" % (p["name"], p["version"], p["license"] or "see the crate"))
'
  } >"$doc/copyright"
  gzip -9n <packaging/changelog >"$doc/changelog.gz"
  chmod 0644 "$doc/copyright" "$doc/changelog.gz"
}

# Strips as dh_strip does: the symbols stay out of a package (the release build keeps
# line tables for backtraces).
install_stripped() {
  install -D -m "$1" "$2" "$3"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$3"
}

# Writes DEBIAN/control from packaging/NAME/control.in, the maintainer scripts, md5sums,
# and builds the package.
finish_package() {
  local name=$1 pkg_version=$2 root=$work/debian/$1
  local depends
  install -d -m 0755 "$root/DEBIAN"
  local objects=()
  while IFS= read -r object; do objects+=("-e$object"); done \
    < <(cd "$work" && find "debian/$name" -type f \( -name '*.so' -o -path '*/bin/*' \) | sort)
  depends=$(cd "$work" && dpkg-shlibdeps -O "${objects[@]}" | sed -n 's/^shlibs:Depends=//p')
  [ -z "${3:-}" ] || depends="$3, $depends"
  sed -e "s|@VERSION@|$pkg_version|" -e "s|@ARCH@|$arch|" -e "s|@DEPENDS@|$depends|" \
    -e "s|@PYTHON@|$python|g" \
    -e "s|@INSTALLED_SIZE@|$(du -s -k --exclude=DEBIAN "$root" | cut -f1)|" \
    "packaging/$name/control.in" >"$root/DEBIAN/control"
  for script in preinst postinst prerm postrm; do
    [ ! -f "packaging/$name/$script" ] || install -m 0755 "packaging/$name/$script" "$root/DEBIAN/$script"
  done
  if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
  fi
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums" "$root"/DEBIAN/conffiles 2>/dev/null || true
  mkdir -p "$out"
  rm -f "$out/${name}_"*.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${name}_${pkg_version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${pkg_version}_${arch}.deb"
}

# ngx-wsgi: the daemon.
root=$work/debian/ngx-wsgi
install_stripped 0755 "$bin" "$root/usr/bin/ngx-wsgi"
install_stripped 0644 "$host" "$root/usr/lib/ngx-wsgi/ngx_wsgi_host.so"
install -d "$root/lib/systemd/system"
sed 's|/usr/local/bin/ngx-wsgi|/usr/bin/ngx-wsgi|g' nginx-conf/ngx-wsgi@.service >"$root/lib/systemd/system/ngx-wsgi@.service"
install -m 0644 nginx-conf/ngx-wsgi@.socket "$root/lib/systemd/system/ngx-wsgi@.socket"
chmod 0644 "$root/lib/systemd/system/ngx-wsgi@.service"
install -D -m 0644 packaging/example.ini "$root/etc/ngx-wsgi/example.ini"
install -D -m 0644 nginx-conf/ngx-wsgi.logrotate "$root/etc/logrotate.d/ngx-wsgi"
install -D -m 0644 example/app.py "$root/usr/share/ngx-wsgi/example/app.py"
doc=$root/usr/share/doc/ngx-wsgi
common_docs "$doc"
install -D -m 0644 nginx-conf/mysite.ini "$doc/examples/mysite.ini"
install -m 0644 nginx-conf/ngx-wsgi-site.conf "$doc/examples/mysite-site.conf"
install -m 0644 packaging/example-site.conf "$doc/examples/example-site.conf"
install -d "$root/usr/share/man/man1"
help2man --no-info --no-discard-stderr --section=1 \
  --name="serve a Python WSGI app over the uwsgi protocol and HTTP" \
  "$root/usr/bin/ngx-wsgi" | gzip -9n >"$root/usr/share/man/man1/ngx-wsgi.1.gz"
chmod 0644 "$root/usr/share/man/man1/ngx-wsgi.1.gz"
# The interpreter's executable the daemon runs in, besides the libpython the executable
# links (dpkg-shlibdeps finds that one).
finish_package ngx-wsgi "$version+py$python" "python$python"

# libnginx-mod-http-wsgi: the module.
root=$work/debian/libnginx-mod-http-wsgi
install_stripped 0644 "$module" "$root/usr/lib/nginx/modules/ngx_http_wsgi_module.so"
install -D -m 0644 nginx-conf/mod-http-wsgi.conf "$root/usr/share/nginx/modules-available/mod-http-wsgi.conf"
common_docs "$root/usr/share/doc/libnginx-mod-http-wsgi"
finish_package libnginx-mod-http-wsgi "$version" "$NGINX_DEPENDS"
