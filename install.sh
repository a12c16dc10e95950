#!/usr/bin/env bash
# Create .venv in the repository root and install cider-xc (editable) with
# everything its tests need.  Safe to rerun.
#
# GPAW (the solid-state plugin) is compiled from source against Debian's
# libxc and OpenBLAS and, for production runs, MPICH (MPI) and FFTW
# (install/gpaw_siteconfig.py).  As root the Debian packages are installed
# with apt; without root, missing MPI/FFTW packages give a serial GPAW
# without FFTW and the apt line to get the parallel one.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
BASE_PKGS="libxc-dev libopenblas-dev"
PAR_PKGS="mpich libmpich-dev libfftw3-dev"

missing() {
    local out=""
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || out="$out $p"
    done
    echo "$out"
}

miss_base=$(missing $BASE_PKGS)
miss_par=$(missing $PAR_PKGS)
if [ -n "$miss_base$miss_par" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        # no recommends: Debian's MPI packages would pull in a second MPI
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $miss_base $miss_par
    elif [ -n "$miss_base" ]; then
        echo "install.sh: GPAW needs libxc-dev and libopenblas-dev:" >&2
        echo "    sudo apt-get install -y --no-install-recommends $BASE_PKGS $PAR_PKGS" >&2
        exit 1
    else
        echo "install.sh: WARNING: without$miss_par GPAW is built serial and without FFTW." >&2
        echo "    For MPI and FFTW: sudo apt-get install -y --no-install-recommends $PAR_PKGS" >&2
        echo "    then rerun install.sh" >&2
    fi
fi
want_mpi=0
want_fftw=0
command -v mpicxx.mpich >/dev/null 2>&1 && [ "${CIDER_GPAW_SERIAL:-0}" != 1 ] && want_mpi=1
[ -f /usr/include/fftw3.h ] && want_fftw=1

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --upgrade pip >/dev/null

gpaw_features() {   # "MPI FFTW BLAS" as 0/1 each, or "none" without GPAW
    .venv/bin/python - <<'EOF' 2>/dev/null || echo none
import gpaw.cgpaw as c
from gpaw.fftw import have_fftw
print(int(bool(c.have_mpi)), int(bool(have_fftw())), int(hasattr(c, "mmm")))
EOF
}

# pip caches wheels by source, not by how they were configured: a serial
# GPAW wheel built earlier on this machine would be reused.  Build GPAW
# from its sdist, without any cache, whenever the installed one lacks
# MPI or FFTW that this machine can give it.
have=$(gpaw_features)
if [ "$have" != "$want_mpi $want_fftw 1" ]; then
    echo "install.sh: building GPAW (MPI: $want_mpi, FFTW: $want_fftw, BLAS) from source ..."
    reinstall=""
    [ "$have" != none ] && reinstall="--force-reinstall --no-deps"
    GPAW_CONFIG="$PWD/install/gpaw_siteconfig.py" CIDER_GPAW_SERIAL=$((1 - want_mpi)) \
        .venv/bin/python -m pip install -q $reinstall --no-cache-dir --no-binary gpaw "gpaw>=24"
    have=$(gpaw_features)
    if [ "$have" != "$want_mpi $want_fftw 1" ]; then
        echo "install.sh: GPAW was built with (MPI FFTW BLAS) = ($have), wanted ($want_mpi $want_fftw 1)" >&2
        exit 1
    fi
fi
CC=${CC:-g++} .venv/bin/python -m pip install -e ".[test,train,gpaw]"
echo "install.sh: GPAW MPI FFTW BLAS: $have (1 = yes); run in parallel with" \
     "'mpiexec -n 2 .venv/bin/gpaw python script.py' (MPICH)"
# compile and cache the numba kernels once, so the first run is not slow
.venv/bin/python -c "import cider_xc, cider_xc.pyscf, cider_xc.gpaw; print('cider-xc', cider_xc.__version__, 'installed; functionals:', cider_xc.available())"
