"""Unpruned angular grid for an isolated atom with a CIDER functional.

An atom's energy does not depend on how its density is oriented, so with an
open p or d shell the SCF has an exactly flat direction (which orbital the
hole sits in) that only the angular grid breaks.  PySCF's default grid
prunes the angular grid near the nucleus (NWChem scheme: 50-266 Lebedev
points inside the valence shell).  CIDER's energy density varies strongly
with angle there (through the iso-orbital indicator and the nonlocal
features), so with the pruned grid the energy of a rotated density moves by
several 1e-6 Hartree (B atom, def2-SVP, grid level 3; PBE 7e-8:
benchmarks/results_atom_grid_anisotropy.txt), and DIIS drifts along that
bumpy, almost flat direction (benchmarks/results_scf_convergence.txt has the
whole atom set with the unpruned grid).  For one atom the unpruned grid
costs little (1.6x the points of a small system).

``mf.cider_atom_grid`` chooses: ``"auto"`` (the default) switches PySCF's
default pruning (``gen_grid.nwchem_prune``) off for a molecule of one atom,
and leaves every other grid as it is; ``True`` switches pruning off for any
system, ``False`` never.  Anything else is an error naming the choices.  It
acts when the grid is first built (``mf.initialize_grids``, before the
semilocal start too) and never on a grid that is already built; the log
says when it did.
"""
from __future__ import annotations

from ..model import CiderFunctional


def wants_unpruned_grid(mf, mol=None):
    """Whether ``mf`` (a Kohn-Sham object) should get an unpruned angular
    grid: a CIDER functional, a grid not built yet and ``mf.cider_atom_grid``
    as described in the module docstring."""
    from pyscf.dft import gen_grid
    from .start import auto_choice
    choice = auto_choice(mf, "cider_atom_grid",
                         "an isolated atom with PySCF's default pruning")
    xc = mf.__dict__.get("xc")
    if not isinstance(xc, CiderFunctional) or xc.cider_x == 0.0 or choice is False:
        return False
    grids = getattr(mf, "grids", None)
    if grids is None or grids.coords is not None or grids.prune is None:
        return False
    if choice is None:
        mol = mol if mol is not None else mf.mol
        return mol.natm == 1 and grids.prune is gen_grid.nwchem_prune
    return True


def apply(mf, mol=None):
    """Switch the angular pruning of ``mf.grids`` off when
    :func:`wants_unpruned_grid` says so; returns whether it did."""
    if not wants_unpruned_grid(mf, mol):
        return False
    from pyscf.lib import logger
    mf.grids.prune = None
    logger.info(mf, "CIDER: angular grid pruning off (mf.cider_atom_grid = %r; an "
                "isolated atom's energy must not depend on the orientation of its "
                "density, see cider_xc.pyscf.atomgrid; False keeps PySCF's pruning)",
                getattr(mf, "cider_atom_grid", "auto"))
    return True


def wrap_initialize_grids(orig):
    """PySCF's ``KohnShamDFT.initialize_grids`` with :func:`apply` first."""
    def initialize_grids(self, mol=None, dm=None):
        apply(self, mol)
        return orig(self, mol, dm)
    initialize_grids._cider_orig = orig
    initialize_grids.__doc__ = orig.__doc__
    return initialize_grids
