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
.venv/bin/python -m pip install -e ".[test,train]"
# compile and cache the numba kernels once, so the first run is not slow
.venv/bin/python -c "import cider_xc, cider_xc.pyscf; print('cider-xc', cider_xc.__version__, 'installed; functionals:', cider_xc.available())"
