#!/usr/bin/env bash
# `make bench`: ngx-wsgi against uWSGI behind stock nginx; see bench/run.py for options.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/run.py "$@"
