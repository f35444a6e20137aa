#!/usr/bin/env bash
# Prints the pyo3 build config that links PYTHON's interpreter into the daemon statically
# (`make PYTHON_LINK=static`; backend/build.rs emits the link lines). Usage:
#   scripts/pyo3-static-config.sh /usr/bin/python3 > target/pyo3-static.cfg
set -euo pipefail
python=${1:?usage: $0 PYTHON}
read -r version libpl library < <("$python" -c '
import sysconfig
print(sysconfig.get_config_var("VERSION"), sysconfig.get_config_var("LIBPL"), sysconfig.get_config_var("LIBRARY"))')
archive=$libpl/$library
if [ ! -f "$archive" ]; then
  echo "pyo3-static-config: $python's static library $archive is missing:" \
    "on Debian it comes with libpython$version-dev (apt-get install libpython$version-dev)" >&2
  exit 1
fi
lib_name=${library#lib}
cat <<CFG
implementation=CPython
version=$version
shared=false
abi3=false
lib_name=${lib_name%.a}
lib_dir=$libpl
executable=$python
pointer_width=64
build_flags=
suppress_build_script_link_lines=true
CFG
