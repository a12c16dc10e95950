"""Semilocal start: a CIDER SCF begins from the density of its PBE analogue.

When ``mf.kernel()`` runs with a CIDER functional and no ``dm0``, PySCF asks
``mf.get_init_guess``.  This module's override (installed on
``pyscf.dft.rks.KohnShamDFT`` by :func:`.hook.install`) first runs the same
calculation (same class, molecule, grids, density fitting, spin) with the
CIDER exchange replaced by PBE exchange, e.g. ``0.25*GGA_X_PBE +
0.75*GGA_X_PBE, GGA_C_PBE`` for the shipped PBE0 surrogate, from PySCF's
usual guess, and hands its converged density matrix to the CIDER SCF.

Why: the CIDER SCF from PySCF's atomic guess stalls for open shells with a
degenerate, partly filled p or pi shell (ClO, Si2, the F and S atoms at
def2-TZVP: |g| ~ 1e-4 for 50 cycles); from the PBE density all of them
converge (benchmarks/results_g2_validation.txt).  A PBE cycle costs a
fraction of a CIDER cycle (no nonlocal features).

Which systems get it (``mf.cider_start``, default ``"auto"``): open shells
only (``mol.spin != 0``).  A closed-shell SCF converges from PySCF's guess
to the same state in fewer cycles than the start adds (every G2-1 molecule
and water cluster in benchmarks/results_scf_convergence.txt and
results_scf_timing.txt starts from the guess), so there the start costs
more than it saves.  ``True`` runs it for every system, ``False`` for none
(PySCF's guess).

The start changes where the SCF begins, not where it ends: the CIDER SCF
still converges to PySCF's criteria on the CIDER energy.  An explicit ``dm0``
and ``init_guess = 'chk'`` are always used as given, and a composition
without CIDER exchange (``cider_x = 0``) is its own semilocal analogue.  ``mf.cider_start_cycles``
records the semilocal cycles (0 when no start ran), so that a benchmark can
count them with the CIDER ones.
"""
from __future__ import annotations

import time

import numpy as np

from ..model import CiderFunctional


def semilocal_analogue(fn):
    """The xc string of ``fn`` with its CIDER exchange replaced by PBE's."""
    pbe_x = f"{fn.cider_x:.17g}*GGA_X_PBE"
    return f"{pbe_x} + {fn.semilocal_xc}" if fn.semilocal_xc else f"{pbe_x},"


def _base():
    from pyscf.dft import rks
    return rks.KohnShamDFT


def auto_choice(mf, attr, auto_means):
    """A plugin switch ``mf.<attr>``: ``"auto"`` (the default) -> None, True
    or False (numpy booleans too) -> bool; anything else is an error that
    names the choices (``auto_means`` says what "auto" does)."""
    choice = getattr(mf, attr, "auto")
    if isinstance(choice, str) and choice.lower() == "auto":
        return None
    if isinstance(choice, (bool, np.bool_)):
        return bool(choice)
    raise ValueError(f"mf.{attr} = {choice!r}: use 'auto' ({auto_means}), "
                     "True (always) or False (never)")


def wants_start(mf, mol=None):
    """Whether ``mf`` (with a CIDER functional) gets the semilocal start:
    ``mf.cider_start`` True or False as given; ``"auto"`` (the default) for
    open shells only.  Anything else is an error that names the choices."""
    choice = auto_choice(mf, "cider_start", "open shells only")
    if choice is None:
        return (mol if mol is not None else mf.mol).spin != 0
    return choice


def get_init_guess(self, mol=None, key="minao", **kwargs):
    from . import atomgrid
    base = super(_base(), self).get_init_guess
    xc = self.__dict__.get("xc")
    self.cider_start_cycles = 0
    atomgrid.apply(self, mol)      # before the start, which shares the grid
    if (not isinstance(xc, CiderFunctional) or xc.cider_x == 0.0
            or str(key).lower().startswith("chk") or not wants_start(self, mol)):
        return base(mol, key, **kwargs)
    from pyscf.lib import logger
    log = logger.new_logger(self)
    t0 = time.perf_counter()
    sl = self.copy()
    sl.xc = semilocal_analogue(xc)
    sl.cider_start = False
    sl.chkfile = None           # never write over the user's checkpoint
    sl.callback = None
    sl.verbose = min(self.verbose, 2)
    sl.conv_tol = max(self.conv_tol, 1e-7)
    sl.conv_tol_grad = None
    sl.cider_domain_check = False
    if mol is not None:
        sl.mol = mol
    dm = sl.get_init_guess(sl.mol, key, **kwargs)
    sl.kernel(dm0=dm)
    self.cider_start_cycles = int(getattr(sl, "cycles", 0))
    if not sl.converged:
        log.info("CIDER semilocal start (%s) did not converge in %d cycles: PySCF's "
                 "%s guess is used instead", sl.xc, sl.max_cycle, key)
        return base(mol, key, **kwargs)
    log.info("CIDER semilocal start: %s converged in %d cycles (%.1f s); the CIDER SCF "
             "starts from its density (mf.cider_start = False: PySCF's guess)",
             sl.xc, self.cider_start_cycles, time.perf_counter() - t0)
    dm = sl.make_rdm1()
    return dm
