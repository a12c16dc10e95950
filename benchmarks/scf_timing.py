"""SCF wall time of CIDER against PBE, r2SCAN and PBE0 on water clusters.

def2-SVP, grid level 3, density fitting, the same geometry for every method.
Prints wall times, ratios to PBE, r2SCAN and PBE0 measured in the same run,
and the time per SCF cycle of the CIDER descriptor and potential steps.

    .venv/bin/python benchmarks/scf_timing.py [--sizes 1 2 4 8 16]
"""
import argparse
import time

import numpy as np
from pyscf import dft, gto

import cider_xc

WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


def water_cluster(n, spacing=2.9, seed=7):
    """n water molecules on a cubic lattice (Angstrom), random orientations."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    sites = [np.array([i, j, k]) * spacing for i in range(side) for j in range(side)
             for k in range(side)][:n]
    atoms = []
    for s in sites:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        for sym, x in zip("OHH", WATER @ q.T + s):
            atoms.append((sym, tuple(x)))
    return atoms


def run(mol, xc):
    mf = dft.RKS(mol).density_fit()
    mf.grids.level = 3
    mf.xc = xc
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    t0 = time.perf_counter()
    e = mf.kernel()
    t = time.perf_counter() - t0
    tim = getattr(mf._numint, "timings", None)
    return e, t, len(cycles), mf.converged, tim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--methods", nargs="+", default=["PBE", "r2SCAN", "PBE0", "CIDER"])
    args = ap.parse_args(argv)
    fn = cider_xc.load()
    # warm up numba kernels outside the timings
    run(gto.M(atom=water_cluster(1), basis="sto-3g", verbose=0), fn)
    print(f"functional: {fn.describe()}")
    hdr = (f"{'n':>3s} {'nao':>5s} " + " ".join(f"{m + ' s':>10s}" for m in args.methods)
           + "  CIDER/PBE CIDER/r2SCAN CIDER/PBE0  cyc  desc+pot/cycle s")
    print(hdr)
    for n in args.sizes:
        mol = gto.M(atom=water_cluster(n), basis="def2-svp", verbose=0)
        res = {}
        for m in args.methods:
            res[m] = run(mol, fn if m == "CIDER" else m)
        line = f"{n:3d} {mol.nao:5d} " + " ".join(f"{res[m][1]:10.2f}" for m in args.methods)
        if "CIDER" in res:
            tc = res["CIDER"][1]
            ratio = lambda ref: f"{tc / res[ref][1]:9.2f}" if ref in res else f"{'-':>9s}"  # noqa
            tim = res["CIDER"][4]
            per = (tim["descriptors"] + tim["potential"]) / max(tim["calls"], 1)
            line += (f"  {ratio('PBE')} {ratio('r2SCAN'):>12s} {ratio('PBE0'):>10s}"
                     f" {res['CIDER'][2]:4d} {per:12.3f}")
        print(line, flush=True)
        for m in args.methods:
            if not res[m][3]:
                print(f"    warning: {m} did not converge for n={n}")


if __name__ == "__main__":
    main()
