"""Grid sensitivity of a CIDER functional in PySCF: how much its energy and
its nuclear gradient depend on the integration grid.

Water, def2-SVP, RKS, no density fitting, one thread:

* the self-consistent total energy at grid levels 2-5 (spread max - min, and
  level 3 against level 5);
* the grid-response term of the nuclear gradient (``grid_response=True``
  minus ``False``: moving grid points and Becke weights; off by default in
  PySCF) at grid levels 1, 3 and 5;
* the share of the exchange weight |w e_x^LDA| on which the bounded F_x
  saturates (F_PBE + g f_ML outside [lower, max(upper, F_PBE)]) at the
  level-3 SCF density.

A rough F_x (fast changes in space) shows up as a large spread and a large
grid-response term.  PBE is printed beside it.

    .venv/bin/python benchmarks/grid_sensitivity.py cider-pbe0 cider-pbe0-v2 cider-pbe0-v1 \
        --out benchmarks/results_grid_sensitivity
"""
import argparse
import os
import sys

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


def saturated_share(mf, fn):
    """Share of |w e_x^LDA| where the bound saturates, at mf's density."""
    from cider_xc.pyscf.features import spin_channel_features
    if fn.bound is None:
        return 0.0
    sat = tot = 0.0
    for c in spin_channel_features(mf.mol, mf.grids, mf.make_rdm1(), fn.settings):
        _, _, _, raw = fn.enhancement(c["x"], fpbe=c["fpbe"], return_raw=True)
        out = np.isfinite(fn.bound.range_target(raw, c["fpbe"]))
        aw = np.abs(c["we"])
        sat += float(aw[out].sum())
        tot += float(aw.sum())
    return sat / tot


def run(xc):
    from pyscf import dft, gto
    import cider_xc
    mol = gto.M(atom=WATER, basis="def2-svp", verbose=0)
    fn = None if xc.upper() == "PBE" else cider_xc.load(xc)
    row = {"xc": xc, "energy": {}, "grid_response_term": {}}
    for level in (1, 2, 3, 4, 5):
        mf = dft.RKS(mol)
        mf.xc = fn if fn is not None else xc
        mf.grids.level = level
        mf.conv_tol = 1e-11
        e = mf.kernel()
        assert mf.converged, (xc, level)
        if level >= 2:
            row["energy"][level] = float(e)
        if level in (1, 3, 5):
            g0 = mf.nuc_grad_method()
            g0.grid_response = False
            g1 = mf.nuc_grad_method()
            g1.grid_response = True
            row["grid_response_term"][level] = float(np.abs(g1.kernel() - g0.kernel()).max())
        if level == 3 and fn is not None:
            row["saturated_share"] = saturated_share(mf, fn)
    es = list(row["energy"].values())
    row["energy_spread"] = max(es) - min(es)
    row["level3_minus_level5"] = row["energy"][3] - row["energy"][5]
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="CIDER functionals (names or files)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    lines = ["water, def2-SVP, RKS, no DF, conv_tol 1e-11, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; Hartree and Hartree/Bohr",
             "",
             f"{'xc':>16s} {'E spread L2-5':>14s} {'E(L3)-E(L5)':>12s} {'grid resp L1':>13s} "
             f"{'L3':>9s} {'L5':>9s} {'saturated':>10s}"]
    for xc in ["PBE"] + args.models:
        r = run(xc)
        rows.append(r)
        g = r["grid_response_term"]
        sat = f"{100 * r['saturated_share']:9.3f}%" if "saturated_share" in r else f"{'-':>10s}"
        lines.append(f"{xc:>16s} {r['energy_spread']:14.2e} {r['level3_minus_level5']:12.2e} "
                     f"{g[1]:13.2e} {g[3]:9.2e} {g[5]:9.2e} {sat}")
        print(lines[-1], flush=True)
        write_report(args.out, {"rows": rows}, lines, final=False)
    write_report(args.out, {"rows": rows}, lines, final=True)


if __name__ == "__main__":
    main()
