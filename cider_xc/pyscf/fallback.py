"""A more robust SCF driver for cases where plain DIIS fails.

Some systems (the Li atom with the shipped default, for example) stall and
then diverge under PySCF's default DIIS. :func:`kernel` runs the normal
``mf.kernel()`` and, only if that does not converge, retries with
energy-based DIIS (ADIIS) started from the PBE density computed with the same
molecule, basis, grid and density fitting.
"""
from __future__ import annotations


def kernel(mf, max_cycle=150):
    """Run ``mf``; returns (energy, used_fallback)."""
    from pyscf import scf
    e = mf.kernel()
    if mf.converged:
        return e, False
    pbe = mf.copy()
    pbe.xc = "PBE"
    pbe.verbose = 0
    pbe.kernel()
    mf.diis = scf.ADIIS()
    mf.max_cycle = max_cycle
    return mf.kernel(pbe.make_rdm1()), True
