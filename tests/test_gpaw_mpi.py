"""CiderXC under MPI: the serial numbers in every GPAW parallel layout.

Each case runs tests/mpi/run_cider.py (a distorted Si2 cell with 2x2x2 k, or
spin-polarised bcc Fe) serially and under ``mpiexec -n N gpaw python`` and
compares energy (1e-6 eV), forces (1e-5 eV/A) and stress (1e-6 eV/A^3).
MPI is part of the install (install.sh builds GPAW against MPICH): a
missing mpiexec or a serial GPAW is a failure here, not a skip.
"""
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "mpi" / "run_cider.py"
SLABS = Path(__file__).parent / "mpi" / "run_slabs.py"
BIN = Path(sys.executable).parent
TIMEOUT = 1200


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def mpiexec():
    """MPICH's launcher (the MPI GPAW was built with), or fail."""
    for name in ("mpiexec.mpich", "mpiexec"):
        path = shutil.which(name)
        if path:
            return [path]
    pytest.fail("mpiexec not found: install.sh installs MPICH (mpich, libmpich-dev) "
                "and builds GPAW against it; rerun it as root")


def _parse(out, what):
    assert out.returncode == 0, f"{what} failed:\n{out.stderr[-4000:]}"
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, f"{what}: expected one RESULT line:\n{out.stdout[-2000:]}"
    return json.loads(lines[0][7:])


@functools.lru_cache(maxsize=None)
def serial(system):
    out = subprocess.run([sys.executable, str(SCRIPT), system, "{}"], capture_output=True,
                         text=True, timeout=TIMEOUT, env=_env())
    return _parse(out, f"serial {system}")


def parallel(system, nprocs, layout):
    cmd = mpiexec() + ["-n", str(nprocs), str(BIN / "gpaw"), "python", str(SCRIPT), system,
                       json.dumps(layout)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    return _parse(out, " ".join(cmd[-5:]))


def _compare(ref, res):
    assert abs(res["energy"] - ref["energy"]) < 1e-6
    assert np.abs(np.array(res["forces"]) - ref["forces"]).max() < 1e-5
    assert np.abs(np.array(res["stress"]) - ref["stress"]).max() < 1e-6


def test_gpaw_is_built_with_mpi_and_fftw():
    import gpaw.cgpaw as cgpaw
    from gpaw.fftw import have_fftw
    assert cgpaw.have_mpi, "GPAW was built without MPI: rerun install.sh (as root)"
    assert have_fftw(), "GPAW was built without FFTW: rerun install.sh (as root)"
    mpiexec()


@pytest.mark.parametrize("nprocs", [2, 3])
def test_distributed_convolution_equals_serial(nprocs):
    """The slab-distributed FFT features (forward on the grid and at off-grid
    points, adjoint, point gradient, strain derivative) against the serial
    convolver on the whole grid, on every rank (3 ranks: uneven slabs)."""
    cmd = mpiexec() + ["-n", str(nprocs), str(BIN / "gpaw"), "python", str(SLABS)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    res = _parse(out, " ".join(cmd[-4:]))
    assert res["ranks"] == nprocs
    assert res["worst over ranks"] < 1e-12, res


@pytest.mark.slow
@pytest.mark.parametrize("layout, expect", [
    ({}, None),                                    # GPAW's default PW layout (k-points)
    ({"domain": 2}, {"domain": 2}),
    ({"kpt": 2}, {"kpt": 2}),
    ({"band": 2}, {"band": 2}),
])
def test_si_two_ranks_equal_serial(layout, expect):
    ref = serial("si")
    res = parallel("si", 2, layout)
    assert res["layout"]["world"] == 2
    for key, size in (expect or {}).items():
        assert res["layout"][key] == size, res["layout"]
    _compare(ref, res)


@pytest.mark.slow
def test_symmetric_si8_domain_ranks_equal_serial():
    """Cubic Si8: on-site reuse for symmetry-equivalent atoms, each domain
    rank holding and evaluating the atoms it owns."""
    ref = serial("si8")
    res = parallel("si8", 2, {"domain": 2})
    assert res["layout"]["domain"] == 2
    _compare(ref, res)
    # the PAW radial data of each atom on one domain rank only (4 + 4 of 8)
    owned = np.array(res["paw_owned"])
    assert (owned.sum(0) == 1).all() and (owned.sum(1) == 4).all(), owned


@pytest.mark.slow
@pytest.mark.parametrize("layout", [{}, {"domain": 2}])
def test_spin_polarised_fe_two_ranks_equal_serial(layout):
    ref = serial("fe")
    res = parallel("fe", 2, layout)
    _compare(ref, res)


@pytest.mark.slow
def test_si_four_ranks_oversubscribed_equal_serial():
    ref = serial("si")
    res = parallel("si", 4, {"domain": 2, "kpt": 2})
    assert res["layout"]["world"] == 4 and res["layout"]["domain"] == 2
    _compare(ref, res)
