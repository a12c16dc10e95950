"""How much an isolated atom's energy depends on the orientation of the grid.

An atom's energy is invariant under rotations of its density; a Lebedev grid
is not.  For an open-shell atom the SCF therefore has an exactly flat
direction (the orientation of the hole) that only the grid breaks, and the
size of that breaking is what DIIS sees there.  This script takes the
density of one CIDER SCF of the atom (shipped default, PySCF's default grid
level 3, 6 cycles) and evaluates the total energy of every functional at
that same density on the grid rotated by random rotations (for a single
atom the Becke weights do not change), with PySCF's default NWChem pruning
and without pruning (what ``cider_xc.pyscf.atomgrid`` uses for atoms).
Printed: the spread (max - min) over the orientations, Hartree.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/atom_grid_anisotropy.py \\
        --out benchmarks/results_atom_grid_anisotropy [--atom B] [--rotations 8]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

FUNCTIONALS = ["PBE", "TPSS", "R2SCAN", "SCAN", "M06-L", "cider-pbe0", "cider-pbe0-v2"]


def energies(mol, dm, xc, prune, n_rot, level):
    """Total energies at density matrix dm on n_rot grid orientations."""
    from pyscf import dft
    from pyscf.dft import gen_grid
    from scipy.spatial.transform import Rotation
    import cider_xc
    out = []
    for seed in range(n_rot):
        mf = dft.UKS(mol)
        mf.xc = cider_xc.load(xc) if xc.startswith("cider") else xc
        mf.cider_atom_grid = False          # the grid below, as given
        mf.grids.level = level
        mf.grids.prune = gen_grid.nwchem_prune if prune else None
        mf.grids.build(with_non0tab=False)
        if seed:
            rot = Rotation.random(random_state=seed).as_matrix()
            mf.grids.coords = mf.grids.coords @ rot.T
        out.append(float(mf.energy_tot(dm)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atom", default="B")
    ap.add_argument("--basis", default="def2-svp")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--rotations", type=int, default=8)
    ap.add_argument("--functionals", nargs="+", default=FUNCTIONALS)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from pyscf import dft
    import cider_xc
    from cider_xc.training.systems import atom_system
    mol = atom_system(args.atom).to_mol(args.basis)
    mol.verbose = 0
    mf = dft.UKS(mol)
    mf.xc = cider_xc.load()
    mf.cider_atom_grid = False
    mf.max_cycle = 6
    mf.kernel()
    dm = mf.make_rdm1()
    rows = []
    lines = [f"{args.atom} atom, {args.basis}, grid level {args.level}: total energy at one "
             f"fixed density (6 cycles of a CIDER SCF) on {args.rotations} grid orientations; "
             "spread = max - min, Hartree", "",
             f"{'functional':>14s} {'pruned (PySCF default)':>24s} {'unpruned':>10s}"]
    for xc in args.functionals:
        spread = {}
        for prune in (True, False):
            e = energies(mol, dm, xc, prune, args.rotations, args.level)
            spread[prune] = max(e) - min(e)
        rows.append({"functional": xc, "spread_pruned": spread[True],
                     "spread_unpruned": spread[False]})
        lines.append(f"{xc:>14s} {spread[True]:24.2e} {spread[False]:10.2e}")
        print(lines[-1], flush=True)
        write_report(args.out, {"settings": vars(args), "rows": rows}, lines, final=False)
    write_report(args.out, {"settings": vars(args), "rows": rows}, lines, final=True)


if __name__ == "__main__":
    main()
