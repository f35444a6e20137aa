# ngx-wsgi: `make demo` serves the example app through nginx, `make test` runs every test.
# Both install what they need first (scripts/setup.sh: Debian packages and .venv).

# The Python the daemon runs apps in: Debian's python3 (3.11) by default, not whatever python3
# is first on PATH; PYTHON=/path/to/python3.X builds for another (`make deb` names it).
PYTHON ?= /usr/bin/python3
export PYO3_PYTHON := $(PYTHON)
# How the daemon links that Python: shared (libpython3.X.so, the default: Debian's Python
# security updates reach the daemon without a rebuild; the daemon runs inside
# /usr/bin/python3.X, see PYTHON_HOST) or static (libpython3.X.a, as /usr/bin/python3.X
# is, rebuilt by you for each Python update). README, "Which Python runs the app".
PYTHON_LINK ?= shared
ifeq ($(PYTHON_LINK),static)
export PYO3_CONFIG_FILE := $(CURDIR)/target/pyo3-static.cfg
else ifneq ($(PYTHON_LINK),shared)
$(error PYTHON_LINK=$(PYTHON_LINK): it is shared (the default) or static)
endif
# The static build `make test` checks beside the default one, in its own target directory.
STATIC_BIN := target/python-static/release/ngx-wsgi
CARGO ?= cargo
export CARGO
BIN := target/release/ngx-wsgi
# The daemon as an extension module of that Python (shared builds): beside the executable,
# it makes the executable run the daemon inside /usr/bin/python3.X, Debian's optimised
# build of the interpreter (backend/src/python_host.rs; README, "Which Python runs the app").
PYTHON_HOST := target/release/ngx_wsgi_host.so

MODULE := target/release/libngx_http_wsgi_module.so
PREFIX ?= /usr/local

.PHONY: all toolchain build-deps setup nginx-objs build python-host static-daemon demo test unit-test integration-test lint bench fuzz deb deb-test install uninstall clean

all: build

# Rust >= the workspace's rust-version, from rustup: says how to get it when missing.
toolchain:
	@bash scripts/check-toolchain.sh

# What building needs (Debian packages); never test tools, never touches a running nginx.
build-deps: toolchain
	@bash scripts/setup.sh build

# What the tests and the demo need as well: nginx, wrk, curl, iproute2 and .venv (after
# the toolchain check: a machine without Rust hears so before anything is installed).
setup: toolchain
	@bash scripts/setup.sh test

# The nginx build directory the module compiles against (see scripts/nginx-objs.sh).
nginx-objs: build-deps
	@bash scripts/nginx-objs.sh >/dev/null

# The extension module, in its own target directory: pyo3 links no libpython into it (the
# executable it is loaded in has the interpreter), so it cannot share the executable's build.
define build_python_host
env -u PYO3_CONFIG_FILE PYO3_BUILD_EXTENSION_MODULE=1 CARGO_TARGET_DIR=target/python-host \
	$(CARGO) rustc --release -p ngx-wsgi --lib --crate-type cdylib
mkdir -p $(dir $(PYTHON_HOST))
cp target/python-host/release/libngx_wsgi.so $(PYTHON_HOST)
endef

# NGINX_BUILD_DIR (or NGINX_SOURCE_DIR) picks another nginx: see scripts/nginx-objs.sh.
# A static build has no extension module: one left from a shared build is removed.
build: build-deps
	$(if $(filter static,$(PYTHON_LINK)),mkdir -p target && bash scripts/pyo3-static-config.sh $(PYTHON) >$(PYO3_CONFIG_FILE))
	NGINX_BUILD_DIR=$$(bash scripts/nginx-objs.sh) && export NGINX_BUILD_DIR && \
		$(CARGO) build --release --workspace
	$(if $(filter static,$(PYTHON_LINK)),rm -f $(PYTHON_HOST),$(build_python_host))

python-host: build-deps
	$(build_python_host)

# The daemon built with PYTHON_LINK=static, for the tests (target/python-static/).
static-daemon: build-deps
	mkdir -p target/python-static
	bash scripts/pyo3-static-config.sh $(PYTHON) >target/python-static/pyo3.cfg
	PYO3_CONFIG_FILE=$(CURDIR)/target/python-static/pyo3.cfg CARGO_TARGET_DIR=target/python-static \
		$(CARGO) build --release -p ngx-wsgi

demo: setup build
	@bash scripts/demo.sh

test: setup build static-daemon unit-test lint integration-test deb-test

unit-test:
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

integration-test:
	NGX_WSGI_BIN=$(CURDIR)/$(BIN) NGX_WSGI_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) NGX_WSGI_MODULE=$(CURDIR)/$(MODULE) \
		.venv/bin/python -m pytest tests -q -ra

bench: build
	@bash bench/run.sh

# Debian packages of the daemon and the module, in target/debian/ (scripts/deb.sh).
deb: build
	@bash scripts/setup.sh deb
	@bash scripts/deb.sh

# Installs those packages in a fresh Debian 12 root (debootstrap) and serves a page
# through them; then purges them and checks nothing is left (scripts/deb-test.sh).
deb-test: setup deb
	@bash scripts/deb-test.sh

# Runs every fuzz target (fuzz/) for FUZZ_SECONDS each (default 60).
fuzz:
	@bash scripts/fuzz.sh

# The daemon in $(PREFIX)/bin; the module in nginx's modules directory with Debian's
# modules-available/modules-enabled snippets, so loading it is one line nginx already has;
# the systemd unit template reading /etc/ngx-wsgi/NAME.ini.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ngx-wsgi
	# The module of this build, or none (PYTHON_LINK=static): never one of an earlier build.
	if [ -f $(PYTHON_HOST) ]; then install -D -m 0644 $(PYTHON_HOST) $(DESTDIR)$(PREFIX)/lib/ngx-wsgi/ngx_wsgi_host.so; \
	else rm -f $(DESTDIR)$(PREFIX)/lib/ngx-wsgi/ngx_wsgi_host.so; fi
	install -D -m 0644 $(MODULE) $(DESTDIR)/usr/lib/nginx/modules/ngx_http_wsgi_module.so
	install -D -m 0644 nginx-conf/mod-http-wsgi.conf $(DESTDIR)/usr/share/nginx/modules-available/mod-http-wsgi.conf
	install -d $(DESTDIR)/etc/nginx/modules-enabled
	ln -sf /usr/share/nginx/modules-available/mod-http-wsgi.conf $(DESTDIR)/etc/nginx/modules-enabled/50-mod-http-wsgi.conf
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/bin/ngx-wsgi|$(PREFIX)/bin/ngx-wsgi|g' nginx-conf/ngx-wsgi@.service \
		> $(DESTDIR)/etc/systemd/system/ngx-wsgi@.service
	install -m 0644 nginx-conf/ngx-wsgi@.socket $(DESTDIR)/etc/systemd/system/ngx-wsgi@.socket
	install -D -m 0644 nginx-conf/ngx-wsgi.logrotate $(DESTDIR)/etc/logrotate.d/ngx-wsgi
	install -d $(DESTDIR)/etc/ngx-wsgi
	# The example config, unless one is there: an installed file is the user's.
	[ -e $(DESTDIR)/etc/ngx-wsgi/mysite.ini ] || install -m 0644 nginx-conf/mysite.ini $(DESTDIR)/etc/ngx-wsgi/mysite.ini

# Removes what install put in place (the configs in /etc/ngx-wsgi stay: they are the user's).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ngx-wsgi
	rm -f $(DESTDIR)$(PREFIX)/lib/ngx-wsgi/ngx_wsgi_host.so
	[ ! -d $(DESTDIR)$(PREFIX)/lib/ngx-wsgi ] || rmdir --ignore-fail-on-non-empty $(DESTDIR)$(PREFIX)/lib/ngx-wsgi
	rm -f $(DESTDIR)/usr/lib/nginx/modules/ngx_http_wsgi_module.so
	rm -f $(DESTDIR)/etc/nginx/modules-enabled/50-mod-http-wsgi.conf
	rm -f $(DESTDIR)/usr/share/nginx/modules-available/mod-http-wsgi.conf
	rm -f $(DESTDIR)/etc/systemd/system/ngx-wsgi@.service $(DESTDIR)/etc/systemd/system/ngx-wsgi@.socket
	rm -f $(DESTDIR)/etc/logrotate.d/ngx-wsgi

clean:
	$(CARGO) clean
	rm -rf .build
