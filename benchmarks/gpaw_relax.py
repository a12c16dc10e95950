"""Geometry and cell optimisation with CiderXC through ASE (GPAW calculator).

1. Si2 with one atom displaced by (0.1, -0.06, 0.04) Angstrom: BFGS on the
   positions (fmax 0.01 eV/A) must bring the atoms back to the diamond
   positions (the distance to the ideal structure is printed).
2. The Si lattice constant from a cell relaxation driven by the analytic
   stress (FrechetCellFilter + BFGS, fmax 1e-3 eV/A^3 equivalent), compared
   with the minimum of an E(V) fit (Birch-Murnaghan through ASE's
   EquationOfState) of the same functional, once at a fixed cutoff and once
   with the plane-wave set of the relaxed cell kept fixed (PW(ecut,
   cell=...)): the second must agree if the stress is the derivative of the
   energy; the first differs by the basis (Pulay) stress.  For PBE and CIDER (GPAW's PBE0 has no
   stress in plane-wave mode).

PW(400 eV), 4x4x4 k-points, legacy GPAW calculator.  Lattice constants in
Angstrom (experiment 5.431).

Run:  NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/gpaw_relax.py
"""
import argparse
import time

import numpy as np
from ase.build import bulk
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from gpaw import GPAW, PW

from _report import write_report
from cider_xc.gpaw import CiderXC

A_EXPT = 5.431


def calc(xc, ecut, k, basis_cell=None):
    return GPAW(mode=PW(ecut, cell=basis_cell), xc=CiderXC() if xc == "CIDER" else xc, kpts=(k, k, k),
                txt=None, convergence={"energy": 1e-8, "density": 1e-7}, legacy_gpaw=True)


def relax_positions(xc, ecut, k):
    si = bulk("Si", "diamond", A_EXPT)
    ideal = si.get_positions()
    si.positions[1] += [0.1, -0.06, 0.04]
    si.calc = calc(xc, ecut, k)
    opt = BFGS(si, logfile=None)
    t0 = time.perf_counter()
    ok = opt.run(fmax=0.01, steps=30)
    d = si.get_positions() - ideal
    d -= d[0]                       # a rigid translation is free
    return {"converged": bool(ok), "steps": opt.nsteps, "fmax": float(np.abs(si.get_forces()).max()),
            "dist_to_ideal": float(np.linalg.norm(d[1])), "time": time.perf_counter() - t0}


def relax_cell(xc, ecut, k):
    si = bulk("Si", "diamond", A_EXPT * 1.01)
    si.calc = calc(xc, ecut, k)
    opt = BFGS(FrechetCellFilter(si), logfile=None)
    t0 = time.perf_counter()
    ok = opt.run(fmax=1e-3, steps=30)
    a_stress = float((si.get_volume() * 4) ** (1 / 3))
    t_relax = time.perf_counter() - t0
    out = {"converged": bool(ok), "steps": opt.nsteps, "a_stress": a_stress,
           "time_relax": t_relax}
    # E(V) at a fixed cutoff (the plane-wave set changes with the volume:
    # includes the Pulay stress) and with the plane-wave set of the relaxed
    # cell kept fixed (what the analytic stress is the derivative of)
    for key, basis_cell in (("a_eos", None), ("a_eos_fixed_basis", bulk("Si", "diamond", a_stress).cell)):
        vols, ens = [], []
        for f in np.linspace(0.985, 1.015, 5):
            s = bulk("Si", "diamond", a_stress * f)
            s.calc = calc(xc, ecut, k, basis_cell)
            vols.append(s.get_volume())
            ens.append(s.get_potential_energy())
        v0, e0, B = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
        out[key] = float((v0 * 4) ** (1 / 3))
    out["diff"] = a_stress - out["a_eos"]
    out["diff_fixed_basis"] = a_stress - out["a_eos_fixed_basis"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ecut", type=float, default=400.0)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--xc", nargs="+", default=["PBE", "CIDER"])
    ap.add_argument("--out", default="benchmarks/results_gpaw_relax")
    args = ap.parse_args()
    res = {"settings": {"ecut": args.ecut, "k": args.k}, "positions": {}, "cell": {}}
    lines = []
    for xc in args.xc:
        res["positions"][xc] = r = relax_positions(xc, args.ecut, args.k)
        print(xc, "positions", r, flush=True)
        write_report(args.out, res, lines, final=False)
        res["cell"][xc] = r = relax_cell(xc, args.ecut, args.k)
        print(xc, "cell", r, flush=True)
        write_report(args.out, res, lines, final=False)
    lines.append(f"GPAW + ASE optimisation (Si, PW {args.ecut:g} eV, {args.k}^3 k-points)")
    lines.append("positions (BFGS, fmax 0.01 eV/A, atom 1 displaced 0.124 A):")
    for xc, r in res["positions"].items():
        lines.append(f"  {xc:6s} converged={r['converged']} steps={r['steps']} "
                     f"|R - R_ideal| = {r['dist_to_ideal']:.4f} A ({r['time']:.0f} s)")
    lines.append("cell (FrechetCellFilter + BFGS on the analytic stress) vs E(V) fits "
                 "(fixed cutoff / fixed plane-wave set):")
    for xc, r in res["cell"].items():
        lines.append(f"  {xc:6s} converged={r['converged']} steps={r['steps']} "
                     f"a(stress) = {r['a_stress']:.5f} A, a(E(V)) = {r['a_eos']:.5f} A "
                     f"(diff {r['diff']:+.5f}), fixed basis {r['a_eos_fixed_basis']:.5f} A "
                     f"(diff {r['diff_fixed_basis']:+.5f}); expt {A_EXPT}")
    write_report(args.out, res, lines, final=True)


if __name__ == "__main__":
    main()
