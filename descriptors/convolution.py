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
        self._run(MODE_FORWARD, coords, a, a, self.cartesian(c), G=G, dG=dG)
        return G, dG

    def convolve_adjoint(self, coords, a, u):
        """dE/dc for E depending on G through u = dE/dG (nf, N)."""
        coords = np.ascontiguousarray(coords, dtype=float)
        a = np.ascontiguousarray(a, dtype=float)
        u = np.ascontiguousarray(u, dtype=float)
        if u.shape != a.shape:
            raise ValueError("u and a must have the same shape")
        out = np.zeros((NCHUNK, self.ncart))
        self._run(MODE_ADJOINT, coords, a, u, np.zeros(0), out_c=out)
        return self.TT @ out.sum(axis=0)

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
        out = np.zeros((NCHUNK, len(self.l), 3))
        self._run(MODE_CENTER_GRAD, coords, a, u, self.cartesian(c), out_s=out)
        return out.sum(axis=0)

    def point_gradient(self, coords, a, u, c):
        """Derivative of the same E with respect to each point r_g (at fixed
        exponents a and centres): sum_f u[f, g] grad G_f(r_g), shape (N, 3).

        Translation invariance: point_gradient().sum(0) equals
        -center_gradient().sum(0)."""
        coords, a, u = self._check_u(coords, a, u)
        out = np.zeros((len(coords), 3))
        self._run(MODE_POINT_GRAD, coords, a, u, self.cartesian(c), out_p=out)
        return out

    def screen(self, coords, a):
        """The (point block, centre group) pairs every kernel visits: CSR
        arrays (ptr, idx), see :func:`_screen`."""
        return _screen(coords, a, self.centers, self.groups, self.group_zmin, EXP_CUTOFF)

    _EMPTY2 = np.zeros((0, 0))
    _EMPTY3 = np.zeros((0, 0, 0))

    def _run(self, mode, coords, a, u, coef, G=None, dG=None, out_c=None, out_s=None,
             out_p=None):
        ptr, idx = self.screen(coords, a)
        btab = _block_bounds(coords, a)
        e2, e3 = self._EMPTY2, self._EMPTY3
        _kernel(mode, coords, a, u, coef, self.centers, self.l, self.zeta, self.cart_off,
                CART_LX, CART_LY, CART_LZ, CART_START, CART_DIDX, self.groups,
                self.group_lmax, ptr, idx, btab, EXP_CUTOFF,
                e2 if G is None else G, e2 if dG is None else dG,
                e2 if out_c is None else out_c, e3 if out_s is None else out_s,
                e2 if out_p is None else out_p)


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



@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _block_bounds(coords, a):
    """Per point block: bounding-sphere centre (3), radius, and the smallest
    exponent of each feature over the block: (nblk, 4 + nf).  Inside a
    screened (block, group) pair the kernels skip every (shell, feature)
    whose term is below exp(-cutoff) at all points of the block (exact: these
    terms are zero in the per-point test too)."""
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    out = np.empty((nblk, 4 + nf))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        out[b, 0] = cx; out[b, 1] = cy; out[b, 2] = cz; out[b, 3] = rad
        for f in range(nf):
            am = a[f, p0]
            for g in range(p0, p1):
                if a[f, g] < am:
                    am = a[f, g]
            out[b, 4 + f] = am
    return out


# ---------------------------------------------------------------------------
# the fast kernels: one screening loop for all four
# ---------------------------------------------------------------------------
#: the shell-indexed outputs (adjoint, centre gradient) are summed per chunk of
#: point blocks and the chunks added in a fixed order: results do not depend
#: on the number of threads
NCHUNK = 8

MODE_FORWARD, MODE_ADJOINT, MODE_CENTER_GRAD, MODE_POINT_GRAD = 0, 1, 2, 3

_LN2_HI = 0.693147180369123816490       # ln 2 = hi + lo (hi: 32 significant bits)
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_POW2M = 2.0 ** -np.arange(80.0)         # 2^-m, m = 0..79 (exact; x >= -50 needs m <= 73)


@numba.njit(inline="always", fastmath={"contract"}, cache=True)
def _exp_neg(x):
    """exp(x) for -50 <= x <= 0 (clamped below) to ~2e-16 relative, branch
    free so that loops over points vectorise: x = -m ln 2 + r with
    |r| <= ln2 / 2, a degree-13 Taylor polynomial of exp(r) and 2^-m from an
    exact table."""
    x = max(x, -50.0)
    m = math.floor(-x * _LOG2E + 0.5)
    r = (x + m * _LN2_HI) + m * _LN2_LO
    q = 1.0 / 6227020800.0
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    q = q * r + 1.0
    q = q * r + 1.0
    return q * _POW2M[int(m)]


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _screen(coords, a, centers, grp, grp_zmin, cutoff):
    """THE screening of every kernel: which centre groups each block of
    BLOCK points sees.  A group is kept for a block unless even its most
    diffuse shell, convolved with the block's smallest exponent, is below
    exp(-cutoff) on the whole bounding sphere of the block.  Returns CSR
    arrays (ptr (nblk + 1,), idx): the groups of block b are
    idx[ptr[b]:ptr[b + 1]].  Inside a kept (block, group) pair the kernels
    drop every (point, shell, feature) term with
    zeta a / (zeta + a) |r - R|^2 > cutoff, so the sums are the same as a
    per-point test would give."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    keep = np.zeros((nblk, ngrp), dtype=np.bool_)
    cnt = np.zeros(nblk + 1, dtype=np.int64)
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        amin = _block_amin(a, p0, p1)
        k = 0
        for ig in range(ngrp):
            zmin = grp_zmin[ig]
            if not _shell_far(cx, cy, cz, rad, centers[grp[ig]],
                              zmin * amin / (zmin + amin), cutoff):
                keep[b, ig] = True
                k += 1
        cnt[b + 1] = k
    ptr = np.cumsum(cnt)
    idx = np.empty(ptr[-1], dtype=np.int64)
    for b in numba.prange(nblk):
        q = ptr[b]
        for ig in range(ngrp):
            if keep[b, ig]:
                idx[q] = ig
                q += 1
    return ptr, idx


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _kernel(mode, coords, a, u, coef, centers, ls, zetas, offs, lx, ly, lz, start, didx,
            grp, grp_lmax, ptr, idx, btab, cutoff, G, dG, out_c, out_s, out_p):
    """All four convolution kernels in one loop over the screened
    (point block, centre group) pairs of :func:`_screen`; the work on the
    points of a block is written as loops over the points (vectorised).

    K_sf(r_g) = (pi / (zeta + a))^{3/2} (a / (zeta + a))^l
                exp(-zeta a / (zeta + a) |r_g - R_s|^2),   a = a[f, g],
    P_s(d) = sum_k coef_k x^i y^j z^k (the shell's Cartesian polynomial).

    mode 0 (forward): G[f, g] += sum_s K_sf P_s, dG[f, g] += d/da of it;
    mode 1 (adjoint): out_c[chunk, coef k of s] += sum_{g,f} u[f, g] K_sf mono_k;
    mode 2 (centre gradient): out_s[chunk, s] += d/dR_s sum_{g,f} u K_sf P_s;
    mode 3 (point gradient): out_p[g] += sum_{s,f} u[f, g] grad_r (K_sf P_s).

    Inside a (block, group) pair, a shell and feature whose term is below
    exp(-cutoff) at every point of the block (bounding sphere, smallest
    exponent of the feature in the block: table ``btab`` of
    :func:`_block_bounds`) is skipped; the per-point test inside drops the
    rest, so the sums are those of the per-point test.  Far from a group
    only its diffuse shells remain.
    """
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    nmono = start[LMAX + 1]
    B = BLOCK
    # scratch allocated outside the parallel loop and indexed by chunk
    # (numba may hoist allocations out of a prange body and share them)
    pw = np.empty((NCHUNK, 3, LMAX + 1, B))
    monos = np.empty((NCHUNK, nmono, B))
    dd = np.empty((NCHUNK, 4, B))
    kv = np.empty((NCHUNK, nf, B))
    tv = np.empty((NCHUNK, 6, B))
    izv = np.empty((NCHUNK, nf, B))
    iav = np.empty((NCHUNK, nf, B))
    nsmax = 1
    for ig in range(grp.shape[0] - 1):
        nsmax = max(nsmax, grp[ig + 1] - grp[ig])
    lives = np.zeros((NCHUNK, nsmax, nf + 1), dtype=np.int64)
    for ch in numba.prange(NCHUNK):
        px = pw[ch, 0]; py = pw[ch, 1]; pz = pw[ch, 2]
        mono = monos[ch]
        dx = dd[ch, 0]; dy = dd[ch, 1]; dz = dd[ch, 2]; d2 = dd[ch, 3]
        K = kv[ch]
        t0 = tv[ch, 0]; t1 = tv[ch, 1]; t2 = tv[ch, 2]
        t3 = tv[ch, 3]; t4 = tv[ch, 4]; t5 = tv[ch, 5]
        IZ = izv[ch]
        IA = iav[ch]
        live_sf = lives[ch]
        for b in range(ch, nblk, NCHUNK):
            p0 = b * B
            m = min(N, p0 + B) - p0
            if mode == MODE_FORWARD:
                for f in range(nf):
                    for g in range(m):
                        IA[f, g] = 1.0 / a[f, p0 + g]
            for q in range(ptr[b], ptr[b + 1]):
                ig = idx[q]
                s0 = grp[ig]
                R = centers[s0]
                # which (shell, feature) terms reach the block at all: their
                # indices in live_sf[s - s0, 1:1 + n], n = live_sf[s - s0, 0]
                dc = math.sqrt((R[0] - btab[b, 0]) ** 2 + (R[1] - btab[b, 1]) ** 2
                               + (R[2] - btab[b, 2]) ** 2) - btab[b, 3]
                dmin2 = dc * dc * (1.0 - 1e-10) if dc > 0.0 else 0.0
                lmax = -1
                for s in range(s0, grp[ig + 1]):
                    z = zetas[s]
                    n_live = 0
                    for f in range(nf):
                        am = btab[b, 4 + f]
                        if z * am / (z + am) * dmin2 <= cutoff:
                            n_live += 1
                            live_sf[s - s0, n_live] = f
                    live_sf[s - s0, 0] = n_live
                    if n_live > 0 and ls[s] > lmax:
                        lmax = ls[s]
                if lmax < 0:
                    continue
                for g in range(m):
                    x = coords[p0 + g, 0] - R[0]
                    y = coords[p0 + g, 1] - R[1]
                    zz = coords[p0 + g, 2] - R[2]
                    dx[g] = x; dy[g] = y; dz[g] = zz
                    d2[g] = x * x + y * y + zz * zz
                for g in range(m):
                    px[0, g] = 1.0; py[0, g] = 1.0; pz[0, g] = 1.0
                for k in range(1, lmax + 1):
                    for g in range(m):
                        px[k, g] = px[k - 1, g] * dx[g]
                        py[k, g] = py[k - 1, g] * dy[g]
                        pz[k, g] = pz[k - 1, g] * dz[g]
                for k in range(start[lmax + 1]):
                    ix = lx[k]; iy = ly[k]; iz = lz[k]
                    for g in range(m):
                        mono[k, g] = px[ix, g] * py[iy, g] * pz[iz, g]
                for s in range(s0, grp[ig + 1]):
                    n_live = live_sf[s - s0, 0]
                    if n_live == 0:
                        continue
                    fl = live_sf[s - s0, 1:1 + n_live]
                    z = zetas[s]
                    l = ls[s]
                    i0 = start[l]
                    nc = start[l + 1] - i0
                    o = offs[s]
                    # kernel values of every feature at the block's points
                    for f in fl:
                        Kf = K[f]
                        af_ = a[f, p0:p0 + m]
                        for g in range(m):
                            af = af_[g]
                            iza = 1.0 / (z + af)
                            r = af * iza
                            t = math.pi * iza
                            arg = z * r * d2[g]
                            live = 1.0 if arg <= cutoff else 0.0
                            Kf[g] = live * t * math.sqrt(t) * _exp_neg(-arg)
                            t5[g] = r
                            IZ[f, g] = iza
                        for k in range(l):
                            for g in range(m):
                                Kf[g] *= t5[g]
                    if mode == MODE_ADJOINT:
                        for g in range(m):
                            t0[g] = 0.0
                        for f in fl:
                            for g in range(m):
                                t0[g] += u[f, p0 + g] * K[f, g]
                        for k in range(nc):
                            acc = 0.0
                            for g in range(m):
                                acc += t0[g] * mono[i0 + k, g]
                            out_c[ch, o + k] += acc
                        continue
                    # the shell's polynomial (and its gradient for modes 2, 3)
                    for g in range(m):
                        t0[g] = 0.0
                    if mode == MODE_FORWARD:
                        for k in range(nc):
                            ck = coef[o + k]
                            for g in range(m):
                                t0[g] += ck * mono[i0 + k, g]
                        for f in fl:
                            Gf = G[f, p0:p0 + m]
                            dGf = dG[f, p0:p0 + m]
                            Kf = K[f]
                            IZf = IZ[f]
                            IAf = IA[f]
                            for g in range(m):
                                v = Kf[g] * t0[g]
                                Gf[g] += v
                                iza = IZf[g]
                                zr = z * iza
                                dGf[g] += v * (-1.5 * iza + l * (IAf[g] - iza) - d2[g] * zr * zr)
                        continue
                    for g in range(m):
                        t1[g] = 0.0; t2[g] = 0.0; t3[g] = 0.0
                    for k in range(nc):
                        ck = coef[o + k]
                        mk = i0 + k
                        for g in range(m):
                            t0[g] += ck * mono[mk, g]
                        if lx[mk] > 0:
                            cx = ck * lx[mk]
                            j = didx[0, mk]
                            for g in range(m):
                                t1[g] += cx * mono[j, g]
                        if ly[mk] > 0:
                            cy = ck * ly[mk]
                            j = didx[1, mk]
                            for g in range(m):
                                t2[g] += cy * mono[j, g]
                        if lz[mk] > 0:
                            cz = ck * lz[mk]
                            j = didx[2, mk]
                            for g in range(m):
                                t3[g] += cz * mono[j, g]
                    # W0 = sum_f u K, W1 = sum_f u 2 beta K (beta = zeta a / (zeta + a))
                    for g in range(m):
                        t4[g] = 0.0; t5[g] = 0.0
                    for f in fl:
                        for g in range(m):
                            af = a[f, p0 + g]
                            v = u[f, p0 + g] * K[f, g]
                            t4[g] += v
                            t5[g] += 2.0 * z * af / (z + af) * v
                    # sum_f u grad_d (K P) = W0 grad P - W1 d P
                    if mode == MODE_CENTER_GRAD:
                        sx = 0.0; sy = 0.0; sz = 0.0
                        for g in range(m):
                            sx += t4[g] * t1[g] - t5[g] * dx[g] * t0[g]
                            sy += t4[g] * t2[g] - t5[g] * dy[g] * t0[g]
                            sz += t4[g] * t3[g] - t5[g] * dz[g] * t0[g]
                        out_s[ch, s, 0] -= sx
                        out_s[ch, s, 1] -= sy
                        out_s[ch, s, 2] -= sz
                    else:
                        for g in range(m):
                            out_p[p0 + g, 0] += t4[g] * t1[g] - t5[g] * dx[g] * t0[g]
                            out_p[p0 + g, 1] += t4[g] * t2[g] - t5[g] * dy[g] * t0[g]
                            out_p[p0 + g, 2] += t4[g] * t3[g] - t5[g] * dz[g] * t0[g]
