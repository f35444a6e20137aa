# ngx-wsgi: `make demo` serves the example app through nginx, `make test` runs every test.
# Both install what they need first (scripts/setup.sh: Debian packages and .venv).

# The daemon embeds Debian's python3, not whatever python3 is first on PATH.
export PYO3_PYTHON := /usr/bin/python3
CARGO ?= cargo
BIN := target/release/ngx-wsgi

.PHONY: all setup build demo test unit-test integration-test lint bench clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

demo: build
	@bash scripts/demo.sh

test: build unit-test lint integration-test

unit-test:
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

integration-test:
	NGX_WSGI_BIN=$(CURDIR)/$(BIN) .venv/bin/python -m pytest tests -q -ra

bench: build
	@bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf .build
