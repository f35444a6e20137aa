#!/usr/bin/env bash
# The packages' test (`make deb-test`, part of `make test`): what a Debian 12 admin does
# with them, where nothing else is installed.
#
#  1. lintian: no error or warning on either package;
#  2. a fresh Debian 12 root (debootstrap --variant=minbase; the tarball is kept in .build/
#     for the next run) gets Debian's nginx from the archive, then the two .deb files with
#     apt, which fetches what they depend on (libpython3.X, ...);
#  3. in it (chroot, no systemd; servers in a network namespace of the test's own, so the
#     example's port 8080 and nginx's default site's 80 are free): `nginx -t` passes with
#     the module enabled by the package alone and the package's example site; the daemon
#     runs from /etc/ngx-wsgi/example.ini; a page comes through nginx and wsgi_app;
#  4. `apt-get remove` keeps nginx working (the module's link set aside), `apt-get purge`
#     and autoremove leave the root as it was before the install.
# Prints the package sizes and the install-to-first-page time.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=bookworm
# The mirrors this machine's apt uses (DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR to choose).
host_uri() {
  grep -h -o -E "https?://[^ ]+/$1/?( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | tr -d ' ' || true
}
mirror=${DEBIAN_MIRROR:-$(host_uri debian)}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(host_uri debian-security)}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security}
cache=.build/debian-$suite-minbase.tar
daemon_deb=$(ls target/debian/ngx-wsgi_*.deb)
module_deb=$(ls target/debian/libnginx-mod-http-wsgi_*.deb)

say() { echo "deb-test: $*"; }
fail() { echo "deb-test: FAILED: $*" >&2; exit 1; }

say "lintian $daemon_deb $module_deb"
lintian --allow-root --fail-on error,warning "$daemon_deb" "$module_deb" || fail "lintian (above)"

# debootstrap fetches with its own downloader: the proxy apt uses, if any, for it too.
eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null || true)"
[ -z "${http_proxy:-}" ] || export http_proxy

if [ ! -f "$cache" ]; then
  say "debootstrap --variant=minbase $suite ($mirror), kept as $cache"
  fresh=$(mktemp -d "${TMPDIR:-/tmp}/ngx-wsgi-debootstrap.XXXXXX")
  debootstrap --variant=minbase "$suite" "$fresh" "$mirror" >"$fresh.log" 2>&1 \
    || { tail -20 "$fresh.log" >&2; rm -rf "$fresh" "$fresh.log"; fail "debootstrap"; }
  mkdir -p .build
  tar -C "$fresh" -cf "$cache.part" . && mv "$cache.part" "$cache"
  rm -rf "$fresh" "$fresh.log"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ngx-wsgi-debtest.XXXXXX")
root=$work/root
netns=ngx-wsgi-debtest-$$
in_root() { chroot "$root" "$@"; }
# nsenter execs the command (ip netns exec forks, and a signal to its pid would not reach it).
in_netns() { nsenter --net="/run/netns/$netns" chroot "$root" "$@"; }
cleanup() {
  set +e
  in_netns nginx -s stop >/dev/null 2>&1
  [ -z "${daemon_pid:-}" ] || { kill -INT "$daemon_pid"; wait "$daemon_pid"; } 2>/dev/null
  ip netns del "$netns" 2>/dev/null
  umount "$root/proc" "$root/dev/pts" "$root/dev" 2>/dev/null
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir "$root"
tar -C "$root" -xf "$cache"
# A root directory as any: 0755 (mktemp's 0700 would lock out www-data and apt's _apt).
chmod 0755 "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
# The host's apt settings for reaching the archive (a proxy, a snapshot mirror's dates).
apt-config dump 2>/dev/null | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
  >"$root/etc/apt/apt.conf.d/99host-access" || true
# As in any chroot: packages do not start services (nginx's postinst would).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up

export DEBIAN_FRONTEND=noninteractive
say "apt-get install nginx (in the fresh root)"
# apt's output goes to a log, shown when it fails.
apt_get() { in_root apt-get -y -qq "$@" >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get $*"; } >&2; }
apt_get update
apt_get install --no-install-recommends nginx

# What the root holds before our packages: every path, its type and mode, but the
# package manager's own state, caches, logs and the mounts.
snapshot() {
  in_root find / -xdev \( -path /proc -o -path /dev -o -path /sys -o -path /tmp -o -path /run \
    -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/log \) -prune \
    -o -printf '%p %y %m\n' | LC_ALL=C sort
}
# nginx makes its temp directories (/var/lib/nginx/*) when it first loads its config.
in_root nginx -t >/dev/null 2>&1 || fail "nginx -t before our packages"
snapshot >"$work/before"

cp "$daemon_deb" "$module_deb" "$root/tmp/"
start=$(date +%s.%N)
say "apt-get install $(basename "$daemon_deb") $(basename "$module_deb")"
apt_get install --no-install-recommends "/tmp/$(basename "$daemon_deb")" "/tmp/$(basename "$module_deb")"

[ -L "$root/etc/nginx/modules-enabled/50-mod-http-wsgi.conf" ] \
  || fail "installing libnginx-mod-http-wsgi did not enable the module (/etc/nginx/modules-enabled/50-mod-http-wsgi.conf)"
# The package's example site, as its comment says to use it.
cp "$root/usr/share/doc/ngx-wsgi/examples/example-site.conf" "$root/etc/nginx/sites-enabled/ngx-wsgi-example"
in_root nginx -t 2>&1 | sed 's/^/  /'
in_root nginx -t >/dev/null 2>&1 || fail "nginx -t with the module enabled by the package and the example site"

# Without systemd: what ngx-wsgi@example.service does (RuntimeDirectory=ngx-wsgi, then the
# daemon from the example config, as root dropping to www-data).
mkdir -p "$root/run/ngx-wsgi"
start_daemon() {
  # In the background here, not through in_netns: a backgrounded function is a subshell,
  # and its pid, not the daemon's, would be the one signalled.
  nsenter --net="/run/netns/$netns" chroot "$root" /usr/bin/ngx-wsgi /etc/ngx-wsgi/example.ini >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
}
stop_daemon() {
  kill -TERM "$daemon_pid"
  wait "$daemon_pid" || fail "the daemon's SIGTERM stop exited with $?"
  daemon_pid=
}
get_page() {
  page=$(ip netns exec "$netns" curl -sS -f --retry 20 --retry-connrefused --retry-delay 0 --retry-max-time 30 --max-time 10 http://127.0.0.1:8080/) \
    || { cat "$work/daemon.log" "$root/var/log/nginx/error.log" >&2; fail "no page on http://127.0.0.1:8080/"; }
  grep -q "Hello from ngx-wsgi" <<<"$page" \
    || { echo "$page" | head -5; cat "$work/daemon.log" "$root/var/log/nginx/error.log"; fail "the page is not the example app's"; } >&2
}
start_daemon
in_netns nginx
get_page
first_page=$(date +%s.%N)
python=$(sed -n 's/.*<p>Python \([0-9.]*\),.*/\1/p' <<<"$page")
say "page through nginx + wsgi_app + the daemon: 'Hello from ngx-wsgi', Python $python"
# The package's extension module found beside /usr/bin: the daemon runs inside the
# interpreter's executable (/proc shows it), shown as the command it was started as.
exe=$(readlink "/proc/$daemon_pid/exe")
case "$exe" in
  */usr/bin/python3.*) say "the daemon runs inside $exe, shown as '$(tr '\0' ' ' <"/proc/$daemon_pid/cmdline" | sed 's/ *$//')'" ;;
  *) fail "the daemon runs in $exe, not in /usr/bin/python3.X with /usr/lib/ngx-wsgi/ngx_wsgi_host.so" ;;
esac
pkg_python=$(basename "$daemon_deb" | sed 's/.*+py\([0-9.]*\)_.*/\1/')
case "$python" in
  "$pkg_python".*) ;;
  *) fail "the package says Python $pkg_python ($(basename "$daemon_deb")), the app runs on $python" ;;
esac
# The app runs as the example's uid (www-data, 33 in Debian), the socket is nginx's group's.
worker=$(cat /proc/"$daemon_pid"/task/*/children | awk '{print $1}')
worker_uid=$(awk '/^Uid:/ {print $2}' "/proc/$worker/status")
[ "$worker_uid" = 33 ] || fail "the worker $worker runs as uid $worker_uid, not www-data (33)"
socket_owner=$(stat -c %u:%g "$root/run/ngx-wsgi/example.sock")
[ "$socket_owner" = 33:33 ] || fail "the socket belongs to $socket_owner, not www-data (chown-socket)"

# A restart (systemctl restart ngx-wsgi@example). The daemon runs as www-data by then, and
# /run/ngx-wsgi is root's: vacuum cannot remove the socket file and says so; the next
# start replaces it.
stop_daemon
grep -q 'vacuum: cannot remove "/run/ngx-wsgi/example.sock": Permission denied' "$work/daemon.log" \
  || { cat "$work/daemon.log"; fail "vacuum neither removed the socket nor said why"; } >&2
start_daemon
get_page
say "restarted: the stale socket file replaced, the page served again"
in_netns nginx -s quit 2>/dev/null
stop_daemon
rm "$root/etc/nginx/sites-enabled/ngx-wsgi-example"
rm -r "$root/run/ngx-wsgi"

say "apt-get remove: nginx still loads its configuration"
apt_get remove ngx-wsgi libnginx-mod-http-wsgi
[ -L "$root/etc/nginx/modules-enabled/50-mod-http-wsgi.conf.removed" ] \
  || fail "remove did not set the module's link aside"
in_root nginx -t >/dev/null 2>&1 || fail "nginx -t after apt-get remove"

say "apt-get purge and autoremove: nothing left"
apt_get purge ngx-wsgi libnginx-mod-http-wsgi
apt_get autoremove --purge
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
  cat "$work/diff" >&2
  fail "the purge left the root changed (above: - before the install, + after the purge)"
fi
in_root nginx -t >/dev/null 2>&1 || fail "nginx -t after the purge"

printf 'deb-test: passed. %s %s KiB, %s %s KiB; install to first page %.1f s\n' \
  "$(basename "$daemon_deb")" "$(($(stat -c %s "$daemon_deb") / 1024))" \
  "$(basename "$module_deb")" "$(($(stat -c %s "$module_deb") / 1024))" \
  "$(awk "BEGIN { print $first_page - $start }")"
