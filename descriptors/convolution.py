"""Analytic Gaussian convolutions of solid-harmonic Gaussian expansions.

A density expanded in primitive solid-harmonic Gaussians centred on atoms,

    n(r) = sum_P c_P S_P(r - R_P) exp(-zeta_P |r - R_P|^2),

has one-sided nonlocal features with a per-point exponent a(r) in closed
form (the mean-value property of harmonic polynomials under a Gaussian):

    int S(r' - R) e^{-zeta |r' - R|^2} e^{-a |r - r'|^2} dr'
      = (pi / (zeta + a))^{3/2} (a / (zeta + a))^l S(r - R)
        exp(-zeta a / (zeta + a) |r - R|^2).

So G(r_g) is an exact sum over the expansion functions near r_g, evaluated
with the point's own exponent: no interpolation, cost linear in the number
of points once distant shells are screened (shell/point-block bounding
spheres).  The adjoint (dE/dc_P from dE/dG) uses the same kernel.

Everything here is plain numpy/numba on arrays; it knows nothing of PySCF.
Coefficients are handled in a Cartesian representation: each shell holds
``ncart(l)`` coefficients of x^i y^j z^k (i+j+k = l); callers map their
spherical coefficients with :attr:`SolidGaussianSet.T`.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import scipy.sparse

LMAX = 10
BLOCK = 64
EXP_CUTOFF = 40.0   # exp(-40) ~ 4e-18: terms below this are dropped


def _cart_tables(lmax=LMAX):
    lx, ly, lz, start = [], [], [], [0]
    for l in range(lmax + 1):
        for i in range(l, -1, -1):
            for j in range(l - i, -1, -1):
                lx.append(i); ly.append(j); lz.append(l - i - j)
        start.append(len(lx))
    return (np.array(lx, dtype=np.int64), np.array(ly, dtype=np.int64),
            np.array(lz, dtype=np.int64), np.array(start, dtype=np.int64))


CART_LX, CART_LY, CART_LZ, CART_START = _cart_tables()


def _cart_derivative_tables(lx, ly, lz, start):
    """For every monomial k = x^i y^j z^k, the index of the monomial of
    d/dx, d/dy, d/dz (one degree lower; -1 where the derivative is 0)."""
    index = {(int(i), int(j), int(k)): n for n, (i, j, k) in enumerate(zip(lx, ly, lz))}
    d = -np.ones((3, len(lx)), dtype=np.int64)
    for n, (i, j, k) in enumerate(zip(lx, ly, lz)):
        if i > 0:
            d[0, n] = index[(int(i) - 1, int(j), int(k))]
        if j > 0:
            d[1, n] = index[(int(i), int(j) - 1, int(k))]
        if k > 0:
            d[2, n] = index[(int(i), int(j), int(k) - 1)]
    return d


CART_DIDX = _cart_derivative_tables(CART_LX, CART_LY, CART_LZ, CART_START)


def ncart(l):
    return (l + 1) * (l + 2) // 2


class SolidGaussianSet:
    """A set of primitive Cartesian-Gaussian shells.

    Parameters
    ----------
    centers : (nshell, 3) array
    l : (nshell,) int array
    zeta : (nshell,) array of exponents
    T : (ncart_total, ncoef) sparse or dense matrix, optional
        Maps the caller's coefficient vector to the Cartesian coefficients
        (identity by default).
    """

    def __init__(self, centers, l, zeta, T=None):
        self.centers = np.ascontiguousarray(centers, dtype=float).reshape(-1, 3)
        self.l = np.ascontiguousarray(l, dtype=np.int64)
        self.zeta = np.ascontiguousarray(zeta, dtype=float)
        if self.l.max(initial=0) > LMAX:
            raise ValueError(f"angular momentum above {LMAX} is not supported")
        if np.any(self.zeta <= 0):
            raise ValueError("Gaussian exponents must be positive")
        nc = (self.l + 1) * (self.l + 2) // 2
        self.cart_off = np.zeros(len(self.l) + 1, dtype=np.int64)
        np.cumsum(nc, out=self.cart_off[1:])
        self.ncart = int(self.cart_off[-1])
        if T is None:
            T = scipy.sparse.identity(self.ncart, format="csr")
        self.T = scipy.sparse.csr_matrix(T)
        if self.T.shape[0] != self.ncart:
            raise ValueError("T has the wrong number of rows")
        self.TT = self.T.T.tocsr()
        # runs of consecutive shells on the same centre share distances and
        # monomials in the kernels
        new = np.ones(len(self.l), dtype=bool)
        if len(self.l) > 1:
            new[1:] = np.any(self.centers[1:] != self.centers[:-1], axis=1)
        self.groups = np.append(np.nonzero(new)[0], len(self.l)).astype(np.int64)
        # most diffuse exponent and highest l of each group, for screening
        self.group_zmin = np.minimum.reduceat(self.zeta, self.groups[:-1]) \
            if len(self.l) else np.zeros(0)
        self.group_lmax = np.maximum.reduceat(self.l, self.groups[:-1]) \
            if len(self.l) else np.zeros(0, dtype=np.int64)

    @property
    def ncoef(self):
        return self.T.shape[1]

    def cartesian(self, c):
        c = np.asarray(c, dtype=float)
        if c.shape != (self.ncoef,):
            raise ValueError(f"expected {self.ncoef} coefficients, got {c.shape}")
        return np.ascontiguousarray(self.T @ c)

    def evaluate(self, coords, c):
        """Plain value sum_P c_P chi_P(r) at coords (N, 3)."""
        coords = np.ascontiguousarray(coords, dtype=float)
        out = np.zeros(len(coords))
        _evaluate(coords, self.cartesian(c), self.centers, self.l, self.zeta,
                  self.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, out)
        return out

    def convolve(self, coords, a, c):
        """G_f(r_g) = int n(r') exp(-a[f, g] |r_g - r'|^2) dr' and dG/da.

        coords (N, 3); a (nf, N) positive exponents; c (ncoef,).
        Returns G, dG_da, both (nf, N)."""
        coords = np.ascontiguousarray(coords, dtype=float)
        a = np.ascontiguousarray(a, dtype=float)
        if a.ndim != 2 or a.shape[1] != len(coords):
            raise ValueError("a must have shape (nf, N)")
        G = np.zeros(a.shape)
        dG = np.zeros(a.shape)
        _forward(coords, a, self.cartesian(c), self.centers, self.l, self.zeta,
                 self.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, self.groups,
                 self.group_zmin, self.group_lmax, EXP_CUTOFF, G, dG)
        return G, dG

    def convolve_adjoint(self, coords, a, u):
        """dE/dc for E depending on G through u = dE/dG (nf, N)."""
        coords = np.ascontiguousarray(coords, dtype=float)
        a = np.ascontiguousarray(a, dtype=float)
        u = np.ascontiguousarray(u, dtype=float)
        if u.shape != a.shape:
            raise ValueError("u and a must have the same shape")
        out = np.zeros(self.ncart)
        _adjoint(coords, a, u, self.centers, self.l, self.zeta, self.cart_off,
                 CART_LX, CART_LY, CART_LZ, CART_START, self.groups, self.group_zmin,
                 self.group_lmax, EXP_CUTOFF, out)
        return self.TT @ out

    def _check_u(self, coords, a, u):
        coords = np.ascontiguousarray(coords, dtype=float)
        a = np.ascontiguousarray(a, dtype=float)
        u = np.ascontiguousarray(u, dtype=float)
        if a.ndim != 2 or a.shape[1] != len(coords):
            raise ValueError("a must have shape (nf, N)")
        if u.shape != a.shape:
            raise ValueError("u and a must have the same shape")
        return coords, a, u

    def center_gradient(self, coords, a, u, c):
        """Derivative of E = sum_{f,g} u[f, g] G_f(r_g) with respect to the
        centre of every shell, at fixed points, exponents and coefficients.

        coords (N, 3); a, u (nf, N); c (ncoef,).  Returns (nshell, 3): row s
        is dE/dR_s when shell s alone moves (sum the rows of one atom for
        the force on the functions it carries)."""
        coords, a, u = self._check_u(coords, a, u)
        out = np.zeros((len(self.l), 3))
        _center_grad(coords, a, u, self.cartesian(c), self.centers, self.l, self.zeta,
                     self.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, CART_DIDX,
                     self.groups, self.group_zmin, self.group_lmax, EXP_CUTOFF, out)
        return out

    def point_gradient(self, coords, a, u, c):
        """Derivative of the same E with respect to each point r_g (at fixed
        exponents a and centres): sum_f u[f, g] grad G_f(r_g), shape (N, 3).

        Translation invariance: point_gradient().sum(0) equals
        -center_gradient().sum(0)."""
        coords, a, u = self._check_u(coords, a, u)
        out = np.zeros((len(coords), 3))
        _point_grad(coords, a, u, self.cartesian(c), self.centers, self.l, self.zeta,
                    self.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, CART_DIDX,
                    self.groups, self.group_zmin, self.group_lmax, EXP_CUTOFF, out)
        return out


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_sphere(coords, p0, p1):
    cx = 0.0; cy = 0.0; cz = 0.0
    for g in range(p0, p1):
        cx += coords[g, 0]; cy += coords[g, 1]; cz += coords[g, 2]
    n = p1 - p0
    cx /= n; cy /= n; cz /= n
    r2 = 0.0
    for g in range(p0, p1):
        d = (coords[g, 0] - cx) ** 2 + (coords[g, 1] - cy) ** 2 + (coords[g, 2] - cz) ** 2
        if d > r2:
            r2 = d
    return cx, cy, cz, math.sqrt(r2)


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _shell_far(cx, cy, cz, rad, R, zeta_eff, cutoff):
    d = math.sqrt((R[0] - cx) ** 2 + (R[1] - cy) ** 2 + (R[2] - cz) ** 2) - rad
    return d > 0.0 and zeta_eff * d * d > cutoff


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _poly(dx, dy, dz, l, coef, off, lx, ly, lz, start, px, py, pz):
    px[0] = 1.0; py[0] = 1.0; pz[0] = 1.0
    for k in range(1, l + 1):
        px[k] = px[k - 1] * dx
        py[k] = py[k - 1] * dy
        pz[k] = pz[k - 1] * dz
    s = 0.0
    i0 = start[l]
    for k in range(start[l + 1] - i0):
        s += coef[off + k] * px[lx[i0 + k]] * py[ly[i0 + k]] * pz[lz[i0 + k]]
    return s


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _evaluate(coords, coef, centers, ls, zetas, offs, lx, ly, lz, start, out):
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    # scratch is allocated outside the parallel loop and indexed by block:
    # numba may hoist allocations out of a prange body and share them
    scratch = np.empty((nblk, 3, LMAX + 1))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        px = scratch[b, 0]; py = scratch[b, 1]; pz = scratch[b, 2]
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        for s in range(ls.shape[0]):
            z = zetas[s]
            if _shell_far(cx, cy, cz, rad, centers[s], z, EXP_CUTOFF):
                continue
            for g in range(p0, p1):
                dx = coords[g, 0] - centers[s, 0]
                dy = coords[g, 1] - centers[s, 1]
                dz = coords[g, 2] - centers[s, 2]
                arg = z * (dx * dx + dy * dy + dz * dz)
                if arg > EXP_CUTOFF:
                    continue
                out[g] += math.exp(-arg) * _poly(dx, dy, dz, ls[s], coef, offs[s],
                                                 lx, ly, lz, start, px, py, pz)


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_amin(a, p0, p1):
    """Smallest exponent of every feature over points p0..p1."""
    amin = a[0, p0]
    for f in range(a.shape[0]):
        for g in range(p0, p1):
            if a[f, g] < amin:
                amin = a[f, g]
    return amin


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_table(coords, a):
    """Per point block: bounding-sphere centre (3), radius and the smallest
    exponent, (nblk, 5), for the screening of the centre-parallel kernels."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    bsph = np.empty((nblk, 5))
    for b in range(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        bsph[b, 0] = cx; bsph[b, 1] = cy; bsph[b, 2] = cz
        bsph[b, 3] = rad; bsph[b, 4] = _block_amin(a, p0, p1)
    return bsph


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _point_far(a, g, zmin, d2, cutoff):
    """True if even the most diffuse shell of a group is negligible at point g."""
    ag = a[0, g]
    for f in range(1, a.shape[0]):
        if a[f, g] < ag:
            ag = a[f, g]
    return zmin * ag / (zmin + ag) * d2 > cutoff


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _monomials(dx, dy, dz, lmax, lx, ly, lz, start, px, py, pz, mono):
    """All Cartesian monomials x^i y^j z^k with i+j+k <= lmax into mono."""
    px[0] = 1.0; py[0] = 1.0; pz[0] = 1.0
    for k in range(1, lmax + 1):
        px[k] = px[k - 1] * dx
        py[k] = py[k - 1] * dy
        pz[k] = pz[k - 1] * dz
    for k in range(start[lmax + 1]):
        mono[k] = px[lx[k]] * py[ly[k]] * pz[lz[k]]


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _prefactor(af, za, l):
    """(pi / (zeta + a))^{3/2} (a / (zeta + a))^l, with za = zeta + a."""
    r = af / za
    t = math.pi / za
    pref = t * math.sqrt(t)
    for k in range(l):
        pref *= r
    return pref


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _forward(coords, a, coef, centers, ls, zetas, offs, lx, ly, lz, start,
             grp, grp_zmin, grp_lmax, cutoff, G, dG):
    """G[f, g] += sum_s K_s(r_g; a[f, g]) and dG/da; shells grouped by centre
    (grp[i]..grp[i+1]) so that distances and monomials are shared."""
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    # scratch is allocated outside the parallel loop and indexed by block:
    # numba may hoist allocations out of a prange body and share them
    scratch = np.empty((nblk, 3, LMAX + 1))
    monos = np.empty((nblk, nmono))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        px = scratch[b, 0]; py = scratch[b, 1]; pz = scratch[b, 2]
        mono = monos[b]
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        amin = _block_amin(a, p0, p1)
        for ig in range(ngrp):
            zmin = grp_zmin[ig]
            R = centers[grp[ig]]
            if _shell_far(cx, cy, cz, rad, R, zmin * amin / (zmin + amin), cutoff):
                continue
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start, px, py, pz, mono)
                for s in range(grp[ig], grp[ig + 1]):
                    z = zetas[s]
                    l = ls[s]
                    i0 = start[l]
                    poly = 0.0
                    o = offs[s]
                    for k in range(start[l + 1] - i0):
                        poly += coef[o + k] * mono[i0 + k]
                    if poly == 0.0:
                        continue
                    for f in range(nf):
                        af = a[f, g]
                        za = z + af
                        arg = z * af / za * d2
                        if arg > cutoff:
                            continue
                        v = _prefactor(af, za, l) * math.exp(-arg) * poly
                        G[f, g] += v
                        dG[f, g] += v * (-1.5 / za + l * (1.0 / af - 1.0 / za)
                                         - d2 * (z / za) ** 2)


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _adjoint(coords, a, u, centers, ls, zetas, offs, lx, ly, lz, start,
             grp, grp_zmin, grp_lmax, cutoff, out):
    """out[cart coef of shell s] += sum_{g, f} u[f, g] dK_s(r_g; a[f, g])/dc;
    parallel over centre groups, which own disjoint output entries."""
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    bsph = _block_table(coords, a)
    # scratch allocated outside the parallel loop (numba may hoist allocations
    # out of a prange body and share them between threads)
    scratch = np.empty((ngrp, 3, LMAX + 1))
    monos = np.empty((ngrp, nmono))
    for ig in numba.prange(ngrp):
        px = scratch[ig, 0]; py = scratch[ig, 1]; pz = scratch[ig, 2]
        mono = monos[ig]
        zmin = grp_zmin[ig]
        R = centers[grp[ig]]
        for b in range(nblk):
            amin = bsph[b, 4]
            if _shell_far(bsph[b, 0], bsph[b, 1], bsph[b, 2], bsph[b, 3], R,
                          zmin * amin / (zmin + amin), cutoff):
                continue
            p0 = b * BLOCK
            p1 = min(N, p0 + BLOCK)
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    z = zetas[s]
                    l = ls[s]
                    w = 0.0
                    for f in range(nf):
                        af = a[f, g]
                        za = z + af
                        arg = z * af / za * d2
                        if arg > cutoff or u[f, g] == 0.0:
                            continue
                        w += u[f, g] * _prefactor(af, za, l) * math.exp(-arg)
                    if w == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    i0 = start[l]
                    o = offs[s]
                    for k in range(start[l + 1] - i0):
                        out[o + k] += w * mono[i0 + k]


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _poly_grad(coef, o, l, start, lx, ly, lz, didx, mono):
    """P(d) = sum_k coef[o + k] mono_k and its gradient (from the monomial
    table of degree <= l)."""
    i0 = start[l]
    p = 0.0; gx = 0.0; gy = 0.0; gz = 0.0
    for k in range(start[l + 1] - i0):
        ck = coef[o + k]
        if ck == 0.0:
            continue
        m = i0 + k
        p += ck * mono[m]
        if lx[m] > 0:
            gx += ck * lx[m] * mono[didx[0, m]]
        if ly[m] > 0:
            gy += ck * ly[m] * mono[didx[1, m]]
        if lz[m] > 0:
            gz += ck * lz[m] * mono[didx[2, m]]
    return p, gx, gy, gz


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _shell_weights(a, u, g, z, l, d2, cutoff):
    """W0 = sum_f u K_f / P and W1 = sum_f u 2 beta_f K_f / P at point g, so
    that sum_f u[f, g] grad_d K_f = W0 grad P - W1 d P."""
    w0 = 0.0; w1 = 0.0
    for f in range(a.shape[0]):
        uf = u[f, g]
        if uf == 0.0:
            continue
        af = a[f, g]
        za = z + af
        beta = z * af / za
        arg = beta * d2
        if arg > cutoff:
            continue
        v = uf * _prefactor(af, za, l) * math.exp(-arg)
        w0 += v
        w1 += 2.0 * beta * v
    return w0, w1


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _center_grad(coords, a, u, coef, centers, ls, zetas, offs, lx, ly, lz, start, didx,
                 grp, grp_zmin, grp_lmax, cutoff, out):
    """out[s] += d/dR_s sum_{f,g} u[f, g] K_s(r_g - R_s; a[f, g]) =
    -sum u grad_d K_s; parallel over centre groups (disjoint outputs)."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    bsph = _block_table(coords, a)
    scratch = np.empty((ngrp, 3, LMAX + 1))
    monos = np.empty((ngrp, nmono))
    for ig in numba.prange(ngrp):
        px = scratch[ig, 0]; py = scratch[ig, 1]; pz = scratch[ig, 2]
        mono = monos[ig]
        zmin = grp_zmin[ig]
        R = centers[grp[ig]]
        for b in range(nblk):
            amin = bsph[b, 4]
            if _shell_far(bsph[b, 0], bsph[b, 1], bsph[b, 2], bsph[b, 3], R,
                          zmin * amin / (zmin + amin), cutoff):
                continue
            p0 = b * BLOCK
            p1 = min(N, p0 + BLOCK)
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    w0, w1 = _shell_weights(a, u, g, zetas[s], ls[s], d2, cutoff)
                    if w0 == 0.0 and w1 == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    p, gx, gy, gz = _poly_grad(coef, offs[s], ls[s], start, lx, ly, lz,
                                               didx, mono)
                    out[s, 0] -= w0 * gx - w1 * dx * p
                    out[s, 1] -= w0 * gy - w1 * dy * p
                    out[s, 2] -= w0 * gz - w1 * dz * p


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _point_grad(coords, a, u, coef, centers, ls, zetas, offs, lx, ly, lz, start, didx,
                grp, grp_zmin, grp_lmax, cutoff, out):
    """out[g] += sum_{f,s} u[f, g] grad_r K_s(r_g - R_s; a[f, g]); parallel
    over point blocks (disjoint outputs)."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    scratch = np.empty((nblk, 3, LMAX + 1))
    monos = np.empty((nblk, nmono))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        px = scratch[b, 0]; py = scratch[b, 1]; pz = scratch[b, 2]
        mono = monos[b]
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        amin = _block_amin(a, p0, p1)
        for ig in range(ngrp):
            zmin = grp_zmin[ig]
            R = centers[grp[ig]]
            if _shell_far(cx, cy, cz, rad, R, zmin * amin / (zmin + amin), cutoff):
                continue
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    w0, w1 = _shell_weights(a, u, g, zetas[s], ls[s], d2, cutoff)
                    if w0 == 0.0 and w1 == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    p, gx, gy, gz = _poly_grad(coef, offs[s], ls[s], start, lx, ly, lz,
                                               didx, mono)
                    out[g, 0] += w0 * gx - w1 * dx * p
                    out[g, 1] += w0 * gy - w1 * dy * p
                    out[g, 2] += w0 * gz - w1 * dz * p
