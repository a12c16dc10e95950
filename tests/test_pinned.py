"""Pinned total energies of the shipped default functional (DESIGN.md section 9).

A change in physics must be a decision, never an accident: these numbers are
updated deliberately, together with the model file, when the shipped default
(or a kernel that changes its energies) changes.  To update them, run

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python tests/test_pinned.py

and paste the printed dict over PINNED below (and say why in the commit).
"""
import numpy as np
import pytest

# ---- the pinned values: replace them all at once, deliberately ---------------
PINNED = {
    # cider-pbe0 retrained with RBF length scale 0.6 instead of 0.5 (the
    # previous default is kept as cider-pbe0-v2): smoother F_x; Si8 in GPAW
    # had two SCF solutions with 0.5 and the default mixer wandered between
    # them, and the B atom (def2-SVP, no DF) did not converge in PySCF; the
    # held-out accuracy is the same (G2-1 atomization MAD 0.97 kcal/mol): a
    # deliberate change
    "model": "cider-pbe0",
    "model_checksum": "sha256:3c0fef51e5b56954cece25e0030a56680afcd01ac88b0d4fe4a8d02fa277f45d",
    "H2O_RKS_def2-svp_grid2_hartree": -76.27868238670307,
    # open shell: NH2 (non-degenerate 2B1); an earlier default gave OH's pi
    # hole two SCF solutions 1.3e-5 Hartree apart
    "NH2_UKS_def2-svp_grid2_hartree": -55.759350745952354,
    "HI_RKS_def2-svp_ecp_grid2_hartree": -298.3112284066724,
    "Si2_gpaw_pw200_k2_ev": -12.108349535008854,
}
# -----------------------------------------------------------------------------

TOL_HARTREE = 1e-6
EV_PER_HARTREE = 27.211386245988      # ase.units.Hartree (CODATA 2018)

H2O = "O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587"
NH2 = "N 0 0 0.1494; H 0 0.8031 -0.4043; H 0 -0.8031 -0.4043"
HI = "H 0 0 0; I 0 0 1.609"


def _pyscf_energy(atom, spin, ecp=None):
    from pyscf import dft, gto, lib

    import cider_xc  # noqa: F401  (installs the hook that reads mf.xc = "cider-pbe0")
    mol = gto.M(atom=atom, basis="def2-svp", ecp=ecp, spin=spin, verbose=0)
    with lib.with_omp_threads(1):
        mf = (dft.UKS if spin else dft.RKS)(mol)
        mf.xc = PINNED["model"]
        mf.grids.level = 2
        mf.conv_tol = 1e-10
        e = mf.kernel()
    assert mf.converged
    return e


def _gpaw_energy():
    from ase.build import bulk
    from gpaw import GPAW, PW
    import cider_xc
    from cider_xc.gpaw import CiderXC
    si = bulk("Si", "diamond", 5.43)
    si.calc = GPAW(mode=PW(200), xc=CiderXC(cider_xc.load(PINNED["model"])),
                   kpts=(2, 2, 2), txt=None, legacy_gpaw=True,
                   convergence={"energy": 1e-7, "density": 1e-6, "eigenstates": 1e-9})
    return si.get_potential_energy()


COMPUTE = {
    "H2O_RKS_def2-svp_grid2_hartree": lambda: _pyscf_energy(H2O, 0),
    "NH2_UKS_def2-svp_grid2_hartree": lambda: _pyscf_energy(NH2, 1),
    "HI_RKS_def2-svp_ecp_grid2_hartree": lambda: _pyscf_energy(HI, 0, {"I": "def2-svp"}),
    "Si2_gpaw_pw200_k2_ev": _gpaw_energy,
}


def _checksum():
    import cider_xc
    return cider_xc.load(PINNED["model"]).header["checksum"]


def test_pinned_model_file():
    """Fails first when the model file changes: update PINNED deliberately."""
    assert _checksum() == PINNED["model_checksum"], (
        f"the shipped {PINNED['model']} changed (checksum {_checksum()}); if that is "
        "intended, update PINNED in tests/test_pinned.py (see its docstring)")


@pytest.mark.parametrize("key", list(COMPUTE))
def test_pinned_energy(key):
    if key.endswith("_ev"):
        tol = TOL_HARTREE * EV_PER_HARTREE
    else:
        tol = TOL_HARTREE
    e = COMPUTE[key]()
    assert abs(e - PINNED[key]) < tol, (
        f"{key}: {e!r} against the pinned {PINNED[key]!r} ({e - PINNED[key]:+.2e}); if "
        "the change is intended, update PINNED in tests/test_pinned.py")


if __name__ == "__main__":
    new = {"model": PINNED["model"], "model_checksum": _checksum()}
    for k, f in COMPUTE.items():
        new[k] = float(f())
    print("PINNED = {")
    for k, v in new.items():
        print(f"    {k!r}: {v!r},")
    print("}")
