#!/usr/bin/env bash
# Create .venv in the repository root and install cider-xc (editable) with
# everything its tests need.  Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --upgrade pip >/dev/null
# GPAW (the solid-state plugin) compiles against libxc and BLAS from Debian.
if ! dpkg -s libxc-dev libopenblas-dev >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        apt-get install -y -qq libxc-dev libopenblas-dev
    else
        echo "install.sh: GPAW needs libxc-dev and libopenblas-dev:" >&2
        echo "    sudo apt-get install -y libxc-dev libopenblas-dev" >&2
        exit 1
    fi
fi
# GPAW 26 compiles its C sources as C++17 (-std=c++17, #include <algorithm>):
# with plain gcc the build fails, so build it with g++
CC=${CC:-g++} .venv/bin/python -m pip install -e ".[test,train,gpaw]"
# compile and cache the numba kernels once, so the first run is not slow
.venv/bin/python -c "import cider_xc, cider_xc.pyscf, cider_xc.gpaw; print('cider-xc', cider_xc.__version__, 'installed; functionals:', cider_xc.available())"
