"""Speed of the off-grid point path of PeriodicGaussianConvolver.

A realistic case of the GPAW PAW-consistent mode: cubic cell of 10.26 bohr
(Si8), 48^3 grid, a smooth positive density (8 Gaussians plus a constant),
3 grid features with exponents in ~[0.005, 2], and M = 150,000 off-grid
points at random positions with E = 6 entries each whose exponents span
[0.005, 500] log-uniformly (35 lattice exponents at ratio 1.5).

Timed: forward(n, a, points=...), adjoint(vG, state, vGp=...),
point_gradient and the lattice coordinates of the point exponents
(_weights in the old code, _lattice_coords now), best of --repeat.  If the
git history is available the old implementation (commit b4b8309, one pass
over all points per lattice exponent) is loaded from it and timed on the
same input, and the largest relative deviation of the new results from
the old ones is printed.

Run with one thread::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/periodic_points_speed.py

Measured (2-core AMD EPYC VM, one thread; old = b4b8309, new = blocked;
35 lattice exponents; new results equal old ones to <= 1e-15 relative):

    ===============  =======  =======  =======
    step             old (s)  new (s)  speedup
    ===============  =======  =======  =======
    forward(points)   1.375    0.381     3.6x
    adjoint(vGp)      0.998    0.349     2.9x
    point_gradient    1.821    0.532     3.4x
    point weights     0.210    0.013    16.4x
    ===============  =======  =======  =======

"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

OLD_COMMIT = "b4b8309"


def load_old():
    """The old descriptors/periodic.py from git, as a module (or None)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        src = subprocess.run(["git", "show", f"{OLD_COMMIT}:descriptors/periodic.py"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    d = os.path.join(tempfile.gettempdir(), "cider_periodic_old")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "periodic_old.py")
    if not os.path.exists(path) or open(path).read() != src:
        with open(path, "w") as fh:
            fh.write(src)
    spec = importlib.util.spec_from_file_location("periodic_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["periodic_old"] = mod          # numba's cache pickles the module name
    spec.loader.exec_module(mod)
    return mod


def case(M=150000, E=6, seed=0):
    L, N = 10.26, (48, 48, 48)
    cell = np.eye(3) * L
    rng = np.random.default_rng(seed)
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in N], indexing="ij"), -1)
    r = frac @ cell
    n = np.full(N, 0.002)
    for c in rng.uniform(0, 1, (8, 3)):
        d = r - c @ cell
        d -= L * np.round(d / L)
        n += 2.0 * np.exp(-1.5 * (d ** 2).sum(-1))
    a = np.stack([m * 0.63 * n ** (2 / 3) for m in (0.5, 1.0, 2.0)])   # ~[0.005, 2.2]
    xp = rng.uniform(0, 1, (M, 3)) * np.array(N)
    a_pe = np.exp(rng.uniform(np.log(0.005), np.log(500.0), (M, E)))
    vG = rng.standard_normal(a.shape)
    vGp = rng.standard_normal(a_pe.shape)
    return cell, N, n, a, xp, a_pe, vG, vGp


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def run(mod, data, repeat):
    cell, N, n, a, xp, a_pe, vG, vGp = data
    conv = mod.PeriodicGaussianConvolver(cell, N, 1.5)
    pts = mod.PointSet(xp, a_pe)
    out = conv.forward(n, a, points=pts)              # compile, fill the filter cache
    conv.adjoint(vG, out[2], vGp=vGp)
    conv.point_gradient(n, vGp, out[2])
    t_f, out = best(lambda: conv.forward(n, a, points=pts), repeat)
    t_a, adj = best(lambda: conv.adjoint(vG, out[2], vGp=vGp), repeat)
    t_g, grad = best(lambda: conv.point_gradient(n, vGp, out[2]), repeat)
    M, E = a_pe.shape
    if hasattr(mod, "_lattice_coords"):
        def weights():
            j = np.empty((M, E), dtype=np.int64)
            f, s = np.empty((M, E)), np.empty((M, E))
            mod._lattice_coords(pts.a, conv.t_floor, conv.inv_logr, j, f, s)
    else:
        def weights():
            j = np.empty((M, E), dtype=np.int64)
            w, dw = np.empty((M, E, mod.NQ)), np.empty((M, E, mod.NQ))
            mod._weights(pts.a, conv.t_floor, conv.inv_logr, j, w, dw)
    weights()
    t_w, _ = best(weights, repeat)
    res = dict(G=out[0], dG=out[1], Gp=out[3], dGp=out[4], adjoint=adj, gradient=grad)
    return dict(forward=t_f, adjoint=t_a, point_gradient=t_g, point_weights=t_w,
                n_conv=conv.n_convolutions), res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=150000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-old", action="store_true", help="time the current code only")
    args = ap.parse_args()
    import numba
    from cider_xc.descriptors import periodic as new
    data = case(M=args.points)
    print(f"numba threads: {numba.get_num_threads()}, M = {args.points}, E = 6, grid 48^3")
    t_new, r_new = run(new, data, args.repeat)
    print(f"lattice exponents: {t_new['n_conv']}")
    old = None if args.no_old else load_old()
    t_old = r_old = None
    if old is not None:
        t_old, r_old = run(old, data, args.repeat)
    print(f"{'step':<16}{'old (s)':>10}{'new (s)':>10}{'speedup':>9}")
    for key in ("forward", "adjoint", "point_gradient", "point_weights"):
        o = f"{t_old[key]:10.4f}" if t_old else f"{'-':>10}"
        sp = f"{t_old[key] / t_new[key]:8.1f}x" if t_old else ""
        print(f"{key:<16}{o}{t_new[key]:10.4f}{sp}")
    if t_old:
        tot_o = t_old["forward"] + t_old["adjoint"]
        tot_n = t_new["forward"] + t_new["adjoint"]
        print(f"{'forward+adjoint':<16}{tot_o:10.4f}{tot_n:10.4f}{tot_o / tot_n:8.1f}x")
        for key in r_new:
            x, y = r_new[key], r_old[key]
            print(f"max |new - old| / max |old|  {key:<9}: "
                  f"{np.abs(x - y).max() / np.abs(y).max():.2e}")


if __name__ == "__main__":
    main()
