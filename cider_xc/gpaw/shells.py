"""Grid features at PAW radial points through a subset of radial shells.

The FFT features of the grid feature density (cider_xc.gpaw.paw) are needed
at every radial point of every atom inside its augmentation sphere: 50
Lebedev directions times ~375 radial shells for Si, with several exponents
(entries) per point.  The lattice values D_k (the Gaussian-filtered density
at the lattice exponents b_k, cider_xc.descriptors.periodic) are smooth on
the scale of the grid spacing h, while GPAW's radial grids put most of their
shells within a fraction of h of the nucleus.  So the periodic B-spline
interpolation runs only on *sampling shells* (every shell of the radial grid
up to spacing ``spacing * h``, the first and the last kept), for the lattice
values k each later needs (``PointSet(lattice=...)``), and

    D_k(R_a + r_g n) = sum_o L_go D_k(R_a + r_c(g,o) n)      (Lagrange in r,
                                                              ORDER points)
    G(a) = (pi/a)^{3/2} sum_q w_q(a) D_{j(a)+q}               (the exponent
                                                              interpolation)

at every radial point and entry, with the Hermite weights w_q of the
convolver.  The adjoint applies the transposes in the reverse order, so the
point sources handed to the convolver are exactly dE/dD_k at the sampling
points.  With ``spacing=0`` every shell is a sampling shell and the result
equals the direct interpolation to rounding.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..descriptors.periodic import NQ, _hermite_q, _lattice_coord

ORDER = 4             # Lagrange points of the radial interpolation


def sampling_shells(r_g, g_in, step):
    """Indices (ascending, first 0 and last g_in - 1) of the radial shells
    r_g[:g_in] kept so that consecutive kept shells are at most ``step``
    apart (or adjacent), and the Lagrange stencils of every shell g < g_in:
    (g_in, ORDER) indices into the kept shells and weights."""
    r = np.asarray(r_g[:g_in], dtype=float)
    if step <= 0.0 or g_in <= ORDER:
        keep = np.arange(g_in)
    else:
        keep = [0]
        g = 0
        while g < g_in - 1:
            nxt = g + 1
            while nxt + 1 < g_in and r[nxt + 1] - r[g] <= step:
                nxt += 1
            keep.append(nxt)
            g = nxt
        keep = np.array(keep)
    rc = r[keep]
    nc = len(keep)
    order = min(ORDER, nc)
    idx = np.empty((g_in, order), dtype=np.int64)
    wts = np.empty((g_in, order))
    m = np.clip(np.searchsorted(rc, r, side="right") - 1, 0, nc - 1)
    pos = {int(g): c for c, g in enumerate(keep)}
    for g in range(g_in):
        if g in pos:                         # a kept shell: its own value
            idx[g] = pos[g]
            wts[g] = 0.0
            wts[g, 0] = 1.0
            continue
        c0 = int(np.clip(m[g] - (order // 2 - 1), 0, nc - order))
        cs = np.arange(c0, c0 + order)
        idx[g] = cs
        for o, c in enumerate(cs):
            others = np.delete(cs, o)
            wts[g, o] = np.prod((r[g] - rc[others]) / (rc[c] - rc[others]))
    return keep, idx, wts


@numba.njit(parallel=True, cache=True)
def lattice_coords(a, tfloor, inv_logr, j, f, sc, need):
    """Lattice coordinates j (first stencil index), f, sc of the entries
    with exponents a (direction, shell, entry), as the convolver's, and
    need[g] = (lowest, highest) lattice index any entry of shell g needs."""
    nn, ng, ne = a.shape
    for n in numba.prange(nn):
        for g in range(ng):
            for e in range(ne):
                jj, ff, ss = _lattice_coord(a[n, g, e], tfloor, inv_logr)
                j[n, g, e] = jj
                f[n, g, e] = ff
                sc[n, g, e] = ss
    for g in range(ng):
        lo = 1 << 60
        hi = -(1 << 60)
        for n in range(nn):
            for e in range(ne):
                lo = min(lo, j[n, g, e])
                hi = max(hi, j[n, g, e] + NQ - 1)
        need[g, 0] = lo
        need[g, 1] = hi


@numba.njit(cache=True)
def _width(need):
    """The widest lattice window need[g] of any shell."""
    width = 0
    for g in range(need.shape[0]):
        width = max(width, need[g, 1] - need[g, 0] + 1)
    return width


@numba.njit(parallel=True, cache=True)
def shells_forward(a, j, f, sc, need, Dc, klo, idx, wts, G, dG):
    """G, dG/da (direction, shell, entry) of the entries (exponents a,
    lattice coordinates j, f, sc) from the lattice values Dc (direction,
    sampling shell, k - klo[shell]): per point the lattice values its
    entries need, interpolated in r, then the Hermite sums per entry."""
    nn, ng, ne = a.shape
    order = idx.shape[1]
    width = _width(need)
    for n in numba.prange(nn):
        t = np.empty(width)
        for g in range(ng):
            k0 = need[g, 0]
            m = need[g, 1] - k0 + 1
            for q in range(m):
                t[q] = 0.0
            for o in range(order):
                L = wts[g, o]
                if L == 0.0:
                    continue
                c = idx[g, o]
                b = k0 - klo[c]
                for q in range(m):
                    t[q] += L * Dc[n, c, b + q]
            for e in range(ne):
                b = j[n, g, e] - k0
                D = 0.0
                dD = 0.0
                for q in range(NQ):
                    w, dw = _hermite_q(f[n, g, e], sc[n, g, e], q)
                    D += w * t[b + q]
                    dD += dw * t[b + q]
                ae = a[n, g, e]
                u = np.pi / ae
                pref = u * math.sqrt(u)
                G[n, g, e] = pref * D
                dG[n, g, e] = pref * (dD - 1.5 * D / ae)


@numba.njit(parallel=True, cache=True)
def shells_adjoint(a, j, f, need, W, klo, idx, wts, Sc):
    """Sc (direction, sampling shell, k - klo) += the transpose of
    shells_forward's G applied to W (dE/dG per entry)."""
    nn, ng, ne = a.shape
    order = idx.shape[1]
    width = _width(need)
    for n in numba.prange(nn):
        t = np.empty(width)
        for g in range(ng):
            k0 = need[g, 0]
            m = need[g, 1] - k0 + 1
            for q in range(m):
                t[q] = 0.0
            for e in range(ne):
                x = W[n, g, e]
                if x == 0.0:
                    continue
                ae = a[n, g, e]
                u = np.pi / ae
                x *= u * math.sqrt(u)
                b = j[n, g, e] - k0
                for q in range(NQ):
                    w, _ = _hermite_q(f[n, g, e], 0.0, q)
                    t[b + q] += w * x
            for o in range(order):
                L = wts[g, o]
                if L == 0.0:
                    continue
                c = idx[g, o]
                b = k0 - klo[c]
                for q in range(m):
                    Sc[n, c, b + q] += L * t[q]
