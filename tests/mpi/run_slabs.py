"""The slab-distributed FFT features against the serial ones, on every rank.

Run under ``mpiexec -n N gpaw python run_slabs.py`` (tests/test_gpaw_mpi.py):
a skewed cell with odd grid sizes and a smooth density; every rank computes
the serial convolver on the whole grid and the distributed one on its slab,
and compares grid features, dG/da, features and dG/da at off-grid points
(exponent and lattice entries, points near the slab edges and the periodic
wrap), the adjoint with grid and point sources, the point gradient and the
strain derivative.  Prints one RESULT line (JSON: the largest relative
differences) on rank 0.
"""
import json

import numpy as np
from gpaw.mpi import world

from cider_xc.descriptors.periodic import PeriodicGaussianConvolver, PointSet


def density(cell, N):
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in N], indexing="ij"), -1)
    r = frac @ cell
    n = np.full(N, 2e-3)
    for c, z, q in [((0.3, 0.3, 0.3), 1.5, 4.0), ((0.7, 0.6, 0.5), 0.8, 2.0),
                    ((0.05, 0.9, 0.1), 2.5, 1.0)]:
        R = np.array(c) @ cell
        for sh in np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1)
                            for k in (-1, 0, 1)]) @ cell:
            n += q * (z / np.pi) ** 1.5 * np.exp(-z * ((r - R - sh) ** 2).sum(-1))
    return n


def rel(x, y):
    return float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-300))


def main():
    cell = np.diag([5.6, 6.0, 5.2])
    cell[1, 0] = 0.7
    cell[2, 1] = -0.4
    N = (15, 14, 13)
    n = density(cell, N)
    a = np.stack([m * np.pi * (n / 2) ** (2 / 3) for m in (0.5, 1.0, 2.0)])
    rng = np.random.default_rng(7)
    M = 300
    xp = rng.uniform(-1.0, 1.0, (M, 3)) * np.array(N)
    # points on and next to plane boundaries (slab edges, periodic wrap)
    edges = np.arange(-1.0, N[0] + 1.0, 0.5)
    xp[:len(edges), 0] = edges
    xp[len(edges):len(edges) + 5, 0] = [-1e-17, 0.0, N[0] - 1e-13, 1e-300, -0.0]
    a_p = rng.uniform(0.05, 20.0, (M, 4))
    lat = rng.integers(-8, 10, (M, 5))
    vG = rng.normal(size=a.shape)
    vGp = rng.normal(size=a_p.shape)
    vGl = rng.normal(size=lat.shape)

    ser = PeriodicGaussianConvolver(cell, N, 1.3)
    dis = PeriodicGaussianConvolver(cell, N, 1.3, comm=world)
    lay = dis.layout
    sl = slice(lay.x0, lay.x1)
    out = {"ranks": world.size, "slab": [lay.x0, lay.x1]}
    for kind, pts, v in (("exponents", PointSet(xp, a_pe=a_p), vGp),
                         ("lattice", PointSet(xp, lattice=lat), vGl)):
        G, dG, st, Gp, dGp = ser.forward(n, a, points=pts)
        Gd, dGd, std, Gpd, dGpd = dis.forward(np.ascontiguousarray(n[sl]),
                                              np.ascontiguousarray(a[:, sl]), points=pts)
        out[f"{kind}: G"] = rel(Gd, G[:, sl])
        out[f"{kind}: dG"] = rel(dGd, dG[:, sl])
        out[f"{kind}: Gp"] = rel(Gpd, Gp)
        if dGp is not None:
            out[f"{kind}: dGp"] = rel(dGpd, dGp)
        adj = ser.adjoint(vG, st, vGp=v)
        adjd = dis.adjoint(np.ascontiguousarray(vG[:, sl]), std, vGp=v)
        out[f"{kind}: adjoint"] = rel(adjd, adj[sl])
        pg = ser.point_gradient(n, v, st)
        pgd = dis.point_gradient(np.ascontiguousarray(n[sl]), v, std)
        out[f"{kind}: point gradient"] = rel(pgd, pg)
        sd = ser.strain_derivative(n, vG, st, vGp=v)
        sdd = dis.strain_derivative(np.ascontiguousarray(n[sl]),
                                    np.ascontiguousarray(vG[:, sl]), std, vGp=v)
        out[f"{kind}: strain"] = rel(sdd, sd)
    # the FFTs themselves
    X = lay.rfftn(np.ascontiguousarray(n[sl]))
    out["rfftn"] = rel(X, np.fft.rfftn(n)[:, lay.y0:lay.y1])
    out["irfftn"] = rel(lay.irfftn(X), n[sl])
    worst = np.zeros(1)
    worst[0] = max(v for k, v in out.items() if isinstance(v, float))
    world.max(worst)
    out["worst over ranks"] = float(worst[0])
    if world.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
