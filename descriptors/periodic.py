"""Nonlocal features of a periodic density on a uniform grid, by FFT.

The same one-sided definition as for molecules,

    G_i(r) = int n(r') exp(-a_i(r) |r - r'|^2) dr'     (r' over all space),

for a density that is periodic and band-limited to the grid (a plane-wave
pseudo-density).  a_i(r) varies from point to point, so G_i is not one
convolution.  Write G(r) = (pi/a)^{3/2} D(a; r) with the normalised
Gaussian smoothing

    D(b; r) = sum_G n(G) exp(-|G|^2 / (4 b)) exp(i G.r)

(exact for the periodic images of every Gaussian), a smooth, bounded
function of log b between the cell average (b -> 0) and n(r) (b -> inf).
D is computed by FFT on a fixed even-tempered lattice of exponents
b_k = B0 * ratio^k (only the k needed for the exponents that occur) and
interpolated in log b by cubic Hermite pieces with 4th-order finite-
difference slopes (6 lattice points per value; C^1 in a, error O(h^4)).
Below ``b_floor`` (the Gaussian is wider than the cell, D is constant to
1e-12) the interpolation is clamped.

The adjoint (dE/dn(r') from dE/dG(r)) applies the same symmetric filters to
the weighted sums  sum_i dE/dG_i (pi/a_i)^{3/2} w_ik(r),  one FFT each.

:func:`periodic_features_reference` evaluates the definition directly (a
reciprocal-space sum per point, O(N_points N_G)) for tests.
Plain numpy/scipy/numba on arrays; no GPAW here.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import scipy.fft

from .slabs import SlabLayout

B0 = 1.0              # lattice anchor: b_k = B0 * ratio**k, k integer
FLOOR_EXP = 27.6      # exp(-27.6) ~ 1e-12: below b_floor D is the cell average
FILTER_CACHE_BYTES = 256 * 2 ** 20   # Gaussian filters kept between calls, per convolver


def reciprocal_g2(cell_cv, N_c):
    """|G|^2 on the half-complex (rfftn) grid of an N_c grid in cell_cv (bohr)."""
    return (reciprocal_vectors(cell_cv, N_c) ** 2).sum(-1)


def half_complex_weights(N_c):
    """Weights of the rfftn (half-complex) grid for full-grid sums of real
    functions: 2 for the G whose -G is not stored, 1 on the self-conjugate
    planes."""
    N_c = tuple(int(n) for n in N_c)
    mult = np.full((N_c[0], N_c[1], N_c[2] // 2 + 1), 2.0)
    mult[..., 0] = 1.0
    if N_c[2] % 2 == 0:
        mult[..., -1] = 1.0
    return mult


def reciprocal_vectors(cell_cv, N_c):
    """G vectors (grid shape of rfftn, 3) of an N_c grid in cell_cv (bohr)."""
    cell_cv = np.asarray(cell_cv, dtype=float)
    N_c = tuple(int(n) for n in N_c)
    rcell = 2.0 * np.pi * np.linalg.inv(cell_cv).T          # rows: b_1, b_2, b_3
    i0 = np.fft.fftfreq(N_c[0], 1.0 / N_c[0])
    i1 = np.fft.fftfreq(N_c[1], 1.0 / N_c[1])
    i2 = np.arange(N_c[2] // 2 + 1, dtype=float)
    return (i0[:, None, None, None] * rcell[0] + i1[None, :, None, None] * rcell[1]
            + i2[None, None, :, None] * rcell[2])


NQ = 6      # interpolation stencil: lattice points j-2 .. j+3 for t in [j, j+1)


# slope at node j   : (D[j-2] - 8 D[j-1] + 8 D[j+1] - D[j+2]) / 12
# slope at node j+1 : (D[j-1] - 8 D[j]   + 8 D[j+2] - D[j+3]) / 12
_S0 = np.array([1.0, -8.0, 0.0, 8.0, -1.0, 0.0]) / 12.0
_S1 = np.array([0.0, 1.0, -8.0, 0.0, 8.0, -1.0]) / 12.0


@numba.njit(cache=True)
def _hermite6(f, scale, w, dw):
    """Cubic Hermite weights on [j, j+1] with 4th-order finite-difference
    slopes (5-point stencils): C^1 in t, error O(h^4).  Writes the weights
    of the 6 lattice values j-2..j+3 into w and scale * d/df into dw."""
    f2 = f * f
    f3 = f2 * f
    h10 = f3 - 2.0 * f2 + f
    h11 = f3 - f2
    d10 = 3.0 * f2 - 4.0 * f + 1.0
    d11 = 3.0 * f2 - 2.0 * f
    for q in range(NQ):
        w[q] = h10 * _S0[q] + h11 * _S1[q]
        dw[q] = (d10 * _S0[q] + d11 * _S1[q]) * scale
    w[2] += 2.0 * f3 - 3.0 * f2 + 1.0
    w[3] += -2.0 * f3 + 3.0 * f2
    dw[2] += (6.0 * f2 - 6.0 * f) * scale
    dw[3] += (-6.0 * f2 + 6.0 * f) * scale


@numba.njit(cache=True, inline="always")
def _hermite_q(f, scale, q):
    """Weight and scale * d/df of lattice value q (0..5) of _hermite6: the
    same arithmetic for one entry, for kernels that keep only f and scale."""
    f2 = f * f
    f3 = f2 * f
    h10 = f3 - 2.0 * f2 + f
    h11 = f3 - f2
    d10 = 3.0 * f2 - 4.0 * f + 1.0
    d11 = 3.0 * f2 - 2.0 * f
    w = h10 * _S0[q] + h11 * _S1[q]
    dw = (d10 * _S0[q] + d11 * _S1[q]) * scale
    if q == 2:
        w += 2.0 * f3 - 3.0 * f2 + 1.0
        dw += (6.0 * f2 - 6.0 * f) * scale
    elif q == 3:
        w += -2.0 * f3 + 3.0 * f2
        dw += (-6.0 * f2 + 6.0 * f) * scale
    return w, dw


@numba.njit(cache=True, inline="always")
def _lattice_coord(a, tfloor, inv_logr):
    """First stencil index j - 2, fraction f and slope scale d t/d a (0 where
    the exponent is clamped to the floor) of one exponent a."""
    t = math.log(a / B0) * inv_logr
    clamped = t < tfloor
    if clamped:
        t = tfloor
    j = math.floor(t)
    scale = 0.0 if clamped else inv_logr / a
    return j - 2, t - j, scale


@numba.njit(parallel=True, cache=True)
def _weights(a, tfloor, inv_logr, j_out, w_out, dw_out):
    """First stencil index j and weights w, dw/da per (feature, point)."""
    nf, N = a.shape
    for n in numba.prange(nf * N):
        i = n // N
        g = n - i * N
        j, f, scale = _lattice_coord(a[i, g], tfloor, inv_logr)
        _hermite6(f, scale, w_out[i, g], dw_out[i, g])
        j_out[i, g] = j


@numba.njit(parallel=True, cache=True)
def _lattice_coords(a, tfloor, inv_logr, j_out, f_out, s_out):
    """Compact form of _weights: first stencil index j, fraction f and slope
    scale s per (feature, point); the weights are _hermite_q(f, s, q)."""
    nf, N = a.shape
    for n in numba.prange(nf * N):
        i = n // N
        g = n - i * N
        j, f, scale = _lattice_coord(a[i, g], tfloor, inv_logr)
        j_out[i, g] = j
        f_out[i, g] = f
        s_out[i, g] = scale


@numba.njit(cache=True)
def _buckets(j, kmin, nk):
    """Counting sort of (feature, point) pairs by their first lattice index:
    pairs with j = kmin + b are perm[ptr[b]:ptr[b+1]] (flat index i*N+g)."""
    nf, N = j.shape
    ptr = np.zeros(nk + 1, dtype=np.int64)
    for i in range(nf):
        for g in range(N):
            ptr[j[i, g] - kmin + 1] += 1
    for b in range(nk):
        ptr[b + 1] += ptr[b]
    fill = ptr[:-1].copy()
    perm = np.empty(nf * N, dtype=np.int64)
    for i in range(nf):
        for g in range(N):
            b = j[i, g] - kmin
            perm[fill[b]] = i * N + g
            fill[b] += 1
    return perm, ptr


@numba.njit(cache=True)
def _accumulate(k, kmin, D, perm, ptr, f, s, val, dval):
    """Add the lattice value D_k to every (feature, point) whose stencil
    contains k (first index j in k-NQ+1 .. k); f, s: _lattice_coords."""
    N = D.shape[0]
    for jj in range(k - NQ + 1, k + 1):
        b = jj - kmin
        if b < 0 or b >= ptr.shape[0] - 1:
            continue
        q = k - jj
        for t in range(ptr[b], ptr[b + 1]):
            p = perm[t]
            i = p // N
            g = p - i * N
            w, dw = _hermite_q(f[i, g], s[i, g], q)
            val[i, g] += w * D[g]
            dval[i, g] += dw * D[g]


@numba.njit(cache=True)
def _gather(k, kmin, perm, ptr, f, coef, out):
    """out[g] = sum_i coef[i, g] w_ik(g): the source of convolution k."""
    N = out.shape[0]
    out[:] = 0.0
    for jj in range(k - NQ + 1, k + 1):
        b = jj - kmin
        if b < 0 or b >= ptr.shape[0] - 1:
            continue
        q = k - jj
        for t in range(ptr[b], ptr[b + 1]):
            p = perm[t]
            i = p // N
            g = p - i * N
            w, _ = _hermite_q(f[i, g], 0.0, q)
            out[g] += w * coef[i, g]


# --- features at off-grid points (PAW radial grids) -------------------------
# D_k is band-limited on the grid; it is evaluated at arbitrary points by
# periodic tricubic B-spline interpolation in grid-index coordinates (any
# cell shape): C^2 in the position (smooth forces), with the B-spline
# coefficients C_k = D_k prefiltered in reciprocal space (division by the
# B-spline's transfer function, folded into the Gaussian filter: no extra
# cost beyond one inverse FFT).  One position serves several entries
# (exponents), e.g. the all-electron and pseudo on-site densities and every
# feature.
#
# The point kernels work on blocks of KB consecutive lattice exponents at
# once: the block's C_k are stacked as (n0, n1, n2, KB), so the KB values of
# one stencil node are one contiguous 64-byte line, and every point walks
# its 64 nodes once per block (not once per k), with a short vectorisable
# loop over the block's k.  The points are visited sorted by their stencil
# cell (consecutive points share nodes, the block stays in cache).  The
# scatter (adjoint) writes into the stacked buffer; in parallel it runs
# over slabs of the first grid index in two colours (slabs of one colour
# never write the same node: race-free, and the result does not depend on
# the number of threads).

KB = 8               # lattice exponents per block of the point kernels (_accumulate_points
                     # is unrolled for exactly 8)
POINT_CHUNK = 256    # points per parallel task of the point kernels
SLAB_MIN = 3         # slabs of the scatter: >= 3 planes (a stencil spans 4)
NGHOST = 3           # planes past a slab that a stencil starting in it reaches


@numba.njit(cache=True)
def _bspline4(t, w):
    """Cubic B-spline weights of nodes -1, 0, 1, 2 at t in [0, 1)."""
    u = 1.0 - t
    w[0] = u * u * u / 6.0
    w[1] = (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0
    w[2] = (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
    w[3] = t * t * t / 6.0


@numba.njit(cache=True)
def _bspline4_d(t, d):
    """t-derivatives of the cubic B-spline weights of _bspline4."""
    u = 1.0 - t
    d[0] = -0.5 * u * u
    d[1] = (9.0 * t * t - 12.0 * t) / 6.0
    d[2] = (-9.0 * t * t + 6.0 * t + 3.0) / 6.0
    d[3] = 0.5 * t * t


@numba.njit(cache=True, inline="always")
def _wrap(i, n):
    while i >= n:
        i -= n
    return i


@numba.njit(cache=True)
def _point_order(xp, n0, n1, n2, order, slab_ptr):
    """Counting sort of the points by stencil cell (first grid index
    major): order[t] is the t-th point; the points of slab s (first stencil
    index in [s n0 // nslab, (s+1) n0 // nslab)) are t in
    slab_ptr[s] .. slab_ptr[s+1]-1."""
    M = len(xp)
    nslab = len(slab_ptr) - 1
    ncell = n0 * n1 * n2
    cnt = np.zeros(ncell + 1, dtype=np.int64)
    cell = np.empty(M, dtype=np.int64)
    for p in range(M):
        b0 = (math.floor(xp[p, 0]) - 1) % n0
        b1 = (math.floor(xp[p, 1]) - 1) % n1
        b2 = (math.floor(xp[p, 2]) - 1) % n2
        c = (b0 * n1 + b1) * n2 + b2
        cell[p] = c
        cnt[c + 1] += 1
    for c in range(ncell):
        cnt[c + 1] += cnt[c]
    for s in range(nslab + 1):
        slab_ptr[s] = cnt[(s * n0 // nslab) * n1 * n2]
    for p in range(M):
        order[cnt[cell[p]]] = p
        cnt[cell[p]] += 1


@numba.njit(parallel=True, cache=True)
def _point_prepare(xp, a, order, n0, n1, n2, tfloor, inv_logr, base, frac, j, f, s, pref,
                   kp):
    """The points in sorted order t (p = order[t]): wrapped grid index of
    the first node (index -1) of the B-spline stencil base[t], fractional
    position frac[t], lattice coordinates j, f, s of the entries
    (_lattice_coords), their prefactors (pi/a)^{3/2} and kp[t] = (first,
    last) lattice index any entry needs."""
    M, E = a.shape
    for t in numba.prange(M):
        p = order[t]
        for d in range(3):
            x = xp[p, d]
            i = math.floor(x)
            frac[t, d] = x - i
            nd = n0 if d == 0 else (n1 if d == 1 else n2)
            base[t, d] = (i - 1) % nd
        lo = 1 << 60
        hi = -(1 << 60)
        for e in range(E):
            je, fe, se = _lattice_coord(a[p, e], tfloor, inv_logr)
            j[t, e] = je
            f[t, e] = fe
            s[t, e] = se
            pref[t, e] = (math.pi / a[p, e]) ** 1.5
            lo = min(lo, je)
            hi = max(hi, je + NQ - 1)
        kp[t, 0] = lo
        kp[t, 1] = hi


@numba.njit(parallel=True, cache=True)
def _point_finish(order, a, pref, D, dD, G, dG):
    """G, dG/da per point entry (original order) from the sorted D, dD/da."""
    M, E = a.shape
    for t in numba.prange(M):
        p = order[t]
        for e in range(E):
            G[p, e] = pref[t, e] * D[t, e]
            dG[p, e] = pref[t, e] * (dD[t, e] - 1.5 * D[t, e] / a[p, e])


@numba.njit(parallel=True, cache=True)
def _point_sources(order, pref, v, scale, out):
    """out[t] = v[order[t]] pref[t] / scale: point sources in sorted order."""
    M, E = pref.shape
    for t in numba.prange(M):
        p = order[t]
        for e in range(E):
            out[t, e] = v[p, e] * pref[t, e] / scale


@numba.njit(cache=True, inline="always")
def _q_range(k0, je):
    """Stencil positions q of an entry with first index je inside the block
    k0 .. k0+KB-1 (q in q0 .. q1-1, lattice index je + q)."""
    return max(0, k0 - je), min(NQ, k0 + KB - je)


@numba.njit(cache=True, inline="always")
def _needs_block(k0, t, kp, j):
    """Does any entry of point t have a lattice index in k0 .. k0+KB-1?
    (the entries' windows may leave gaps)"""
    if kp[t, 1] < k0 or kp[t, 0] >= k0 + KB:
        return False
    for e in range(j.shape[1]):
        if j[t, e] + NQ > k0 and j[t, e] < k0 + KB:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _entry_sums(k0, t, j, f, coef, s):
    """s[q] = sum_e coef[t, e] w_te,k0+q over the entries of point t;
    returns whether any is nonzero."""
    for q in range(KB):
        s[q] = 0.0
    for e in range(j.shape[1]):
        je = j[t, e]
        q0, q1 = _q_range(k0, je)
        for q in range(q0, q1):
            w, _ = _hermite_q(f[t, e], 0.0, q)
            s[je + q - k0] += w * coef[t, e]
    for q in range(KB):
        if s[q] != 0.0:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, q):
    """sum_c w_c C[o_c + q] over the 4 nodes of one stencil row."""
    return w0 * Cf[o0 + q] + w1 * Cf[o1 + q] + w2 * Cf[o2 + q] + w3 * Cf[o3 + q]


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _accumulate_points(k0, C, base, frac, kp, j, f, sc, val, dval):
    """Add C_k (k = k0 .. k0+KB-1, stacked (n0, n1, n2, KB)) interpolated at
    every point (sorted order) to its entries whose stencils contain k.
    The KB = 8 sums are kept in scalars (registers; measured 2x faster than
    a loop over a length-8 array) on the flat buffer."""
    n0, n1, n2 = C.shape[0], C.shape[1], C.shape[2]
    Cf = C.reshape(-1)
    M, E = j.shape
    for ch in numba.prange((M + POINT_CHUNK - 1) // POINT_CHUNK):
        v = np.empty(KB)
        wx = np.empty(4)
        wy = np.empty(4)
        wz = np.empty(4)
        for t in range(ch * POINT_CHUNK, min(M, (ch + 1) * POINT_CHUNK)):
            if not _needs_block(k0, t, kp, j):
                continue
            _bspline4(frac[t, 0], wx)
            _bspline4(frac[t, 1], wy)
            _bspline4(frac[t, 2], wz)
            ic0 = _wrap(base[t, 2], n2)
            ic1 = _wrap(base[t, 2] + 1, n2)
            ic2 = _wrap(base[t, 2] + 2, n2)
            ic3 = _wrap(base[t, 2] + 3, n2)
            v0 = v1 = v2 = v3 = v4 = v5 = v6 = v7 = 0.0
            for a in range(4):
                ia = _wrap(base[t, 0] + a, n0)
                for b in range(4):
                    row = (ia * n1 + _wrap(base[t, 1] + b, n1)) * n2
                    wab = wx[a] * wy[b]
                    o0 = (row + ic0) * KB
                    o1 = (row + ic1) * KB
                    o2 = (row + ic2) * KB
                    o3 = (row + ic3) * KB
                    w0 = wab * wz[0]
                    w1 = wab * wz[1]
                    w2 = wab * wz[2]
                    w3 = wab * wz[3]
                    v0 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 0)
                    v1 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 1)
                    v2 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 2)
                    v3 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 3)
                    v4 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 4)
                    v5 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 5)
                    v6 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 6)
                    v7 += _node_row(Cf, o0, o1, o2, o3, w0, w1, w2, w3, 7)
            v[0] = v0
            v[1] = v1
            v[2] = v2
            v[3] = v3
            v[4] = v4
            v[5] = v5
            v[6] = v6
            v[7] = v7
            for e in range(E):
                je = j[t, e]
                q0, q1 = _q_range(k0, je)
                for q in range(q0, q1):
                    w, dw = _hermite_q(f[t, e], sc[t, e], q)
                    val[t, e] += w * v[je + q - k0]
                    dval[t, e] += dw * v[je + q - k0]


@numba.njit(parallel=True, cache=True)
def _scatter_points(k0, colour, base, frac, slab_ptr, kp, j, f, coef, out):
    """Transpose of _accumulate_points: out[..., q] += sum_e coef[t,e]
    w_te,k0+q L_t for the points of the slabs of one colour (s % 2 ==
    colour; slabs of one colour write disjoint planes of out)."""
    n0, n1, n2 = out.shape[0], out.shape[1], out.shape[2]
    nslab = len(slab_ptr) - 1
    for h in numba.prange((nslab - colour + 1) // 2):
        sl = 2 * h + colour
        s = np.empty(KB)
        ta = np.empty(KB)
        tb = np.empty(KB)
        wx = np.empty(4)
        wy = np.empty(4)
        wz = np.empty(4)
        for t in range(slab_ptr[sl], slab_ptr[sl + 1]):
            if not _needs_block(k0, t, kp, j):
                continue
            if not _entry_sums(k0, t, j, f, coef, s):
                continue
            _bspline4(frac[t, 0], wx)
            _bspline4(frac[t, 1], wy)
            _bspline4(frac[t, 2], wz)
            for a in range(4):
                ia = _wrap(base[t, 0] + a, n0)
                for q in range(KB):
                    ta[q] = s[q] * wx[a]
                for b in range(4):
                    ib = _wrap(base[t, 1] + b, n1)
                    for q in range(KB):
                        tb[q] = ta[q] * wy[b]
                    for c in range(4):
                        ic = _wrap(base[t, 2] + c, n2)
                        wc = wz[c]
                        for q in range(KB):
                            out[ia, ib, ic, q] += tb[q] * wc


@numba.njit(parallel=True, cache=True)
def _gradient_points(k0, C, base, frac, kp, j, f, coef, out):
    """out[t] += sum_e coef[t,e] w_tek grad_x C_k(x_t) (grid-index units)
    for the block k = k0 .. k0+KB-1 (stacked like _accumulate_points)."""
    n0, n1, n2 = C.shape[0], C.shape[1], C.shape[2]
    M = j.shape[0]
    for ch in numba.prange((M + POINT_CHUNK - 1) // POINT_CHUNK):
        s = np.empty(KB)
        g0 = np.empty(KB)
        g1 = np.empty(KB)
        g2 = np.empty(KB)
        wx = np.empty(4)
        wy = np.empty(4)
        wz = np.empty(4)
        dx = np.empty(4)
        dy = np.empty(4)
        dz = np.empty(4)
        for t in range(ch * POINT_CHUNK, min(M, (ch + 1) * POINT_CHUNK)):
            if not _needs_block(k0, t, kp, j):
                continue
            if not _entry_sums(k0, t, j, f, coef, s):
                continue
            _bspline4(frac[t, 0], wx)
            _bspline4_d(frac[t, 0], dx)
            _bspline4(frac[t, 1], wy)
            _bspline4_d(frac[t, 1], dy)
            _bspline4(frac[t, 2], wz)
            _bspline4_d(frac[t, 2], dz)
            for q in range(KB):
                g0[q] = 0.0
                g1[q] = 0.0
                g2[q] = 0.0
            for a in range(4):
                ia = _wrap(base[t, 0] + a, n0)
                for b in range(4):
                    ib = _wrap(base[t, 1] + b, n1)
                    for c in range(4):
                        ic = _wrap(base[t, 2] + c, n2)
                        w0 = dx[a] * wy[b] * wz[c]
                        w1 = wx[a] * dy[b] * wz[c]
                        w2 = wx[a] * wy[b] * dz[c]
                        for q in range(KB):
                            v = C[ia, ib, ic, q]
                            g0[q] += w0 * v
                            g1[q] += w1 * v
                            g2[q] += w2 * v
            for q in range(KB):
                if s[q] != 0.0:
                    out[t, 0] += s[q] * g0[q]
                    out[t, 1] += s[q] * g1[q]
                    out[t, 2] += s[q] * g2[q]


class PointSet:
    """Off-grid points for :meth:`PeriodicGaussianConvolver.forward`.

    xp : (M, 3) positions in grid-index coordinates (fractional * N_c)
    a_pe : (M, E) exponents of the E entries of every point
    lattice : (M, E) integer lattice indices k instead of exponents: the
        entries are then the B-spline-interpolated lattice values D_k(x)
        themselves (no exponent interpolation, no (pi/a)^{3/2} prefactor;
        forward returns dGp = None), for callers that interpolate in the
        exponent themselves (cider_xc.gpaw.paw).  With ``lattice_width=E``
        ``lattice`` is (M,): the first index of a window k, k + 1, ...,
        k + E - 1 per point (the same entries, without the (M, E) table).
    """

    def __init__(self, xp, a_pe=None, lattice=None, lattice_width=None):
        self.xp = np.ascontiguousarray(xp, dtype=float)
        if (a_pe is None) == (lattice is None):
            raise ValueError("PointSet needs either exponents or lattice indices")
        self.lattice = None if lattice is None else np.ascontiguousarray(lattice,
                                                                         dtype=np.int64)
        self.width = None if lattice_width is None else int(lattice_width)
        self.a = None if a_pe is None else np.ascontiguousarray(a_pe, dtype=float)
        entries = self.a if self.lattice is None else self.lattice
        if self.width is not None:
            if self.lattice is None or self.lattice.ndim != 1 or self.width < 1:
                raise ValueError("lattice_width needs lattice window starts (M,)")
            entries = entries[:, None]
        if self.xp.ndim != 2 or self.xp.shape[1] != 3 or entries.ndim != 2 \
                or len(entries) != len(self.xp):
            raise ValueError("PointSet needs positions (M, 3) and exponents (M, E)")
        self.shape = entries.shape if self.width is None else (len(entries), self.width)
        if self.a is not None and not np.all(self.a > 0):
            raise ValueError("nonlocal exponents must be positive")

    def lattice_rows(self, idx):
        """The lattice indices (len(idx), E) of the points idx."""
        if self.width is None:
            return self.lattice[idx]
        return self.lattice[idx][:, None] + np.arange(self.width, dtype=np.int64)[None, :]


class PeriodicGaussianConvolver:
    """Features G_i of a periodic density on one uniform grid.

    Parameters
    ----------
    cell_cv : (3, 3) cell vectors in bohr (rows)
    N_c : grid points along each cell vector
    ratio : spacing of the exponent lattice (b_{k+1}/b_k)
    workers : FFT threads (scipy.fft)
    comm : communicator of a slab decomposition (:mod:`.slabs`), or None
        (serial).  With a communicator of P ranks every grid array passed
        to or returned by the methods is the rank's real-space slab
        (``self.local_shape``, planes ``layout.x0:layout.x1`` of the first
        axis), the FFTs are distributed (one all-to-all transpose each) and
        the off-grid points (given alike on every rank) are shared out by
        the plane of their stencil; their results and every grid sum are
        summed over the ranks, so each rank returns the same point values
        and strain as a serial call.  Every method is then collective.
    """

    def __init__(self, cell_cv, N_c, ratio=1.5, workers=None, comm=None):
        if not ratio > 1.0:
            raise ValueError(f"exponent ratio must be > 1, got {ratio}")
        self.cell_cv = np.asarray(cell_cv, dtype=float)
        self.N_c = tuple(int(n) for n in N_c)
        self.ratio = float(ratio)
        self.workers = workers
        self.layout = SlabLayout(self.N_c, comm, workers)
        if self.layout.distributed and self.N_c[0] < self.layout.size:
            raise ValueError(f"grid {self.N_c} too small for {self.layout.size} slabs")
        self.local_shape = self.layout.real_shape
        g2 = reciprocal_g2(self.cell_cv, self.N_c)
        self.dv = abs(np.linalg.det(self.cell_cv)) / np.prod(self.N_c)
        g2pos = g2[g2 > 0]
        gmin2 = g2pos.min() if g2pos.size else 1.0
        self.g2 = np.ascontiguousarray(self.layout.recip_rows(g2))   # local reciprocal rows
        del g2
        self.b_floor = gmin2 / (4.0 * FLOOR_EXP)
        self.inv_logr = 1.0 / math.log(self.ratio)
        self.t_floor = math.log(self.b_floor / B0) * self.inv_logr
        self.n_convolutions = 0        # of the last call (for logs/benchmarks)
        self._gv = None                # G vectors, made on the first strain derivative
        self._filters = {}             # k -> exp(-G^2 / 4 b_k), up to FILTER_CACHE_BYTES
        self._pfilters = {}            # k -> the same times the B-spline prefilter

    def _prefilter(self):
        """1 / (transfer function of the cubic B-spline) on the half-complex
        grid (local rows): C = D * this gives the interpolation coefficients."""
        if getattr(self, "_binv", None) is None:
            th = [2.0 * np.pi * np.fft.fftfreq(n) for n in self.N_c[:2]]
            th[1] = th[1][self.layout.y0:self.layout.y1]
            th.append(2.0 * np.pi * np.arange(self.N_c[2] // 2 + 1) / self.N_c[2])
            b = [(2.0 + np.cos(t)) / 3.0 for t in th]
            self._binv = 1.0 / (b[0][:, None, None] * b[1][None, :, None] * b[2][None, None, :])
        return self._binv

    def exponent(self, k):
        return B0 * self.ratio ** k

    def _filter(self, k):
        f = self._filters.get(k)
        if f is None:
            f = np.exp(-self.g2 / (4.0 * self.exponent(k)))
            if (len(self._filters) + len(self._pfilters) + 1) * f.nbytes <= FILTER_CACHE_BYTES:
                self._filters[k] = f
        return f

    def _point_filter(self, k):
        """Gaussian filter times the B-spline prefilter (point coefficients;
        made on the fly from the cached Gaussian filter)."""
        return self._filter(k) * self._prefilter()

    @staticmethod
    def _nslab(n0):
        """Slabs of the parallel point scatter on a buffer of n0 planes: an
        even number (two colours) of slabs of >= SLAB_MIN planes, or one
        slab (serial) on thin grids."""
        nslab = (n0 // SLAB_MIN) // 2 * 2
        return nslab if nslab >= 2 else 1

    def _point_buffer(self):
        """Stacked point coefficients: the local slab plus NGHOST planes."""
        nloc = self.local_shape[0]
        return np.empty((nloc + NGHOST,) + self.N_c[1:] + (KB,))

    def _own_points(self, xp):
        """The points whose B-spline stencil starts (node -1) on a plane of
        this rank's slab: their indices and positions in the coordinates of
        the slab buffer (first stencil plane = local plane index, no wrap
        along the first axis; the buffer holds NGHOST planes past the slab)."""
        lay = self.layout
        fl = np.floor(xp[:, 0])
        base0 = (fl.astype(np.int64) - 1) % self.N_c[0]
        own = np.nonzero((base0 >= lay.x0) & (base0 < lay.x1))[0]
        xl = xp[own].copy()
        ip = (base0[own] - lay.x0 + 1).astype(float)
        # the fractional part of the first coordinate on the local integer
        # part (kept below the next integer, so the stencil plane is kept)
        xl[:, 0] = np.minimum(ip + (xp[own, 0] - fl[own]), np.nextafter(ip + 1.0, -np.inf))
        return own, xl

    def _point_coefficients(self, nG, k0, krange, buf):
        """buf[..., q] = C_k, k = k0 + q in krange (zero outside; no point
        needs those), on the local slab and its ghost planes; returns the
        number of transforms."""
        n = 0
        nloc = self.local_shape[0]
        for q in range(KB):
            k = k0 + q
            if k < krange[0] or k > krange[1]:
                buf[..., q] = 0.0
                continue
            buf[:nloc, ..., q] = self.layout.irfftn(nG * self._point_filter(k))
            n += 1
        self.layout.ghosts(buf, NGHOST)
        return n

    def forward(self, n_g, a_ig, points=None):
        """G_i(r), dG_i/da_i(r) for density n_g (grid shape) and exponents a_ig.

        a_ig: (nf,) + grid shape.  Returns G, dG_da of the same shape and a
        state object for :meth:`adjoint`.  With ``points`` (a
        :class:`PointSet`) the features of the same density at those
        off-grid points are returned too: G, dG, state, Gp, dGp with Gp, dGp
        shaped (M, E) like the points' entries.  (Grid shape: the local slab
        ``self.local_shape``, the whole grid when serial.)"""
        shape = n_g.shape
        lay = self.layout
        if shape != self.local_shape:
            raise ValueError(f"density grid {shape} does not match the convolver's "
                             f"{self.local_shape}")
        a = np.ascontiguousarray(a_ig, dtype=float).reshape(len(a_ig), -1)
        if not np.all(a > 0):
            raise ValueError("nonlocal exponents must be positive")
        nf, N = a.shape
        j = np.empty((nf, N), dtype=np.int64)
        f = np.empty((nf, N))
        sc = np.empty((nf, N))
        _lattice_coords(a, self.t_floor, self.inv_logr, j, f, sc)
        BIG = 1 << 60
        kmin, kmax = lay.int_range(j.min() if j.size else BIG,
                                   j.max() + NQ - 1 if j.size else -BIG)
        grange = (kmin, kmax)          # lattice values the grid points need
        prange = (0, -1)               # ... and the off-grid points
        pts = None
        has_points = False
        if points is not None:
            # the points of this rank's slab in stencil-cell order
            # (consecutive points share stencil nodes); the kernels work on
            # the sorted copies
            Mg, E = points.shape
            has_points = Mg * E > 0
            own, xl = self._own_points(points.xp)
            M = len(own)
            n0e = self.local_shape[0] + NGHOST
            n1, n2 = self.N_c[1], self.N_c[2]
            order = np.empty(M, dtype=np.int64)
            slab_ptr = np.empty(self._nslab(n0e) + 1, dtype=np.int64)
            _point_order(xl, n0e, n1, n2, order, slab_ptr)
            base = np.empty((M, 3), dtype=np.int64)
            frac = np.empty((M, 3))
            jp = np.empty((M, E), dtype=np.int64)
            fp = np.empty((M, E))
            scp = np.empty((M, E))
            prefp = np.empty((M, E))
            kp = np.empty((M, 2), dtype=np.int64)
            if points.lattice is None:
                _point_prepare(xl, points.a[own], order, n0e, n1, n2,
                               self.t_floor, self.inv_logr, base, frac, jp, fp, scp, prefp, kp)
            else:
                # lattice entries: first stencil index k - 2 at fraction 0 (the
                # Hermite weights are then exactly those of node k), unit prefactor
                one = np.ones((M, 1))
                _point_prepare(xl, one, order, n0e, n1, n2,
                               self.t_floor, self.inv_logr, base, frac,
                               np.empty((M, 1), dtype=np.int64), np.empty((M, 1)),
                               np.empty((M, 1)), np.empty((M, 1)), kp)
                klat = points.lattice_rows(own[order])
                jp[:] = klat - 2
                fp[:] = 0.0
                scp[:] = 0.0
                prefp[:] = 1.0
                if M * E:
                    kp[:, 0] = klat.min(1)
                    kp[:, 1] = klat.max(1)
            if has_points:
                prange = lay.int_range(kp[:, 0].min() if M * E else BIG,
                                       kp[:, 1].max() if M * E else -BIG)
                kmin, kmax = min(kmin, prange[0]), max(kmax, prange[1])
            Dp = np.zeros((M, E))
            dDp = np.zeros((M, E))
            buf = self._point_buffer() if has_points else None
        perm, ptr = _buckets(j, kmin, kmax - kmin + 1)
        del j
        nG = lay.rfftn(n_g)
        D = np.zeros((nf, N))
        dD = np.zeros((nf, N))
        nconv = 0
        for k0 in range(kmin, kmax + 1, KB):
            for k in range(max(k0, grange[0]), min(k0 + KB - 1, grange[1]) + 1):
                Dk = lay.irfftn(nG * self._filter(k))
                _accumulate(k, kmin, np.ascontiguousarray(Dk).reshape(-1), perm, ptr, f, sc,
                            D, dD)
                nconv += 1
            if has_points and k0 <= prange[1] and k0 + KB > prange[0]:
                nconv += self._point_coefficients(nG, k0, prange, buf)
                _accumulate_points(k0, buf, base, frac, kp, jp, fp, scp, Dp, dDp)
        self.n_convolutions = nconv
        pref = (np.pi / a) ** 1.5
        # G = pref D, dG = pref (dD - 1.5 D / a), in place (no grid-sized temporaries)
        t = D * 1.5
        t /= a
        dD -= t
        del t
        dD *= pref
        D *= pref
        G, dG = D, dD
        state = (a, pref, perm, ptr, f, kmin, kmax, None, grange, prange)
        G, dG = G.reshape((nf,) + shape), dG.reshape((nf,) + shape)
        if points is None:
            return G, dG, state
        Gp = np.zeros((Mg, E))
        if points.lattice is None:
            dGp = np.zeros((Mg, E))
            Gl, dGl = np.empty((M, E)), np.empty((M, E))
            _point_finish(order, points.a[own], prefp, Dp, dDp, Gl, dGl)
            Gp[own] = Gl
            dGp[own] = dGl
            lay.sum(dGp)
        else:
            Gl = np.empty((M, E))
            Gl[order] = Dp
            Gp[own] = Gl
            dGp = None
        lay.sum(Gp)
        pts = (order, prefp, base, frac, kp, jp, fp, slab_ptr, own, has_points)
        return G, dG, state[:7] + (pts,) + state[8:], Gp, dGp

    def _source_spectra(self, vG_ig, state, vGp=None):
        """(k, U_k) for every lattice exponent: U_k = rfftn of the convolution
        source sum_i vG_i (pi/a_i)^{3/2} w_ik(r) (adjoint and strain terms),
        plus the point sources (vGp: dE/dG per point entry, not per volume,
        alike on every rank) spread back by the transposed interpolation."""
        a, pref, perm, ptr, f, kmin, kmax, pts, grange, prange = state
        lay = self.layout
        nf, N = a.shape
        coef = np.ascontiguousarray(np.asarray(vG_ig, dtype=float).reshape(nf, N) * pref)
        up = None
        if vGp is not None:
            if pts is None:
                raise ValueError("point sources given but the forward call had no points")
            order, prefp, base, frac, kp, jp, fp, slab_ptr, own, has_points = pts
            coefp = np.empty(prefp.shape)
            _point_sources(order, prefp,
                           np.ascontiguousarray(np.asarray(vGp, dtype=float)[own]), self.dv,
                           coefp)
            if has_points:
                up = self._point_buffer()
        nloc = self.local_shape[0]
        u = np.empty(N)
        for k0 in range(kmin, kmax + 1, KB):
            block = up is not None and k0 <= prange[1] and k0 + KB > prange[0]
            if block:
                up[:] = 0.0
                for colour in (0, 1):
                    _scatter_points(k0, colour, base, frac, slab_ptr, kp, jp, fp, coefp, up)
                lay.add_ghosts(up, NGHOST)
            for k in range(k0, min(k0 + KB, kmax + 1)):
                # no grid entry (point entry) needs k outside grange (prange):
                # its source is zero
                U = None
                if grange[0] <= k <= grange[1]:
                    _gather(k, kmin, perm, ptr, f, coef, u)
                    U = lay.rfftn(u.reshape(self.local_shape))
                if block and prange[0] <= k <= prange[1]:
                    Up = lay.rfftn(up[:nloc, ..., k - k0]) * self._prefilter()
                    U = Up if U is None else U + Up
                if U is not None:
                    yield k, U

    def adjoint(self, vG_ig, state, vGp=None):
        """dE/dn(r') per unit volume, given dE/dG_i(r) per unit volume on the
        grid and (optionally) dE/dG of the point entries of the forward
        call (absolute, shaped like the points' exponents)."""
        acc = None
        for k, uG in self._source_spectra(vG_ig, state, vGp):
            uG *= self._filter(k)
            acc = uG if acc is None else acc + uG
        return self.layout.irfftn(acc)

    def point_gradient(self, n_g, vGp, state):
        """d/dx_p of sum_pe vGp[p,e] G_pe with the exponents held fixed: the
        derivative with respect to the point positions (grid-index
        coordinates, (M, 3)), for forces on the centres of radial grids."""
        a, pref, perm, ptr, f, kmin, kmax, pts, grange, prange = state
        if pts is None:
            raise ValueError("the forward call had no points")
        order, prefp, base, frac, kp, jp, fp, slab_ptr, own, has_points = pts
        Mg = len(vGp)
        grad = np.zeros((Mg, 3))
        if not has_points:
            return grad
        out = np.zeros((len(order), 3))
        coef = np.empty(prefp.shape)
        _point_sources(order, prefp,
                       np.ascontiguousarray(np.asarray(vGp, dtype=float)[own]), 1.0, coef)
        nG = self.layout.rfftn(n_g)
        buf = self._point_buffer()
        for k0 in range(kmin, kmax + 1, KB):
            if k0 > prange[1] or k0 + KB <= prange[0]:
                continue
            self._point_coefficients(nG, k0, prange, buf)
            _gradient_points(k0, buf, base, frac, kp, jp, fp, coef, out)
        gl = np.empty_like(out)
        gl[order] = out
        grad[own] = gl
        return self.layout.sum(grad)

    def strain_derivative(self, n_g, vG_ig, state, vGp=None):
        """sum_r dv vG_i(r) dG_i(r)/d eps_vw for a homogeneous strain eps.

        Under the strain r -> (1 + eps) r with the electrons carried along
        (n -> n / det), the Fourier coefficients scale by 1/det and the
        filters exp(-|G|^2 / 4 b_k) change with |G|^2 (b_k and the
        interpolation weights stay fixed), so

            dG/d eps_vw = (pi/a)^{3/2} sum_k w_k(a) sum_G n(G)
                          (G_v G_w / (2 b_k) - delta_vw) exp(-G^2/4b_k) e^{iGr}.

        n_g: the density the features were computed from (state of
        :meth:`forward`); vG_ig: dE/dG_i per unit volume; vGp: dE/dG of the
        point entries (points carried along with the cell, fixed grid-index
        coordinates).  Returns (3, 3) (summed over the ranks)."""
        shape = self.local_shape
        if n_g.shape != shape:
            raise ValueError(f"density grid {n_g.shape} does not match {shape}")
        lay = self.layout
        if self._gv is None:
            self._gv = np.ascontiguousarray(
                lay.recip_rows(reciprocal_vectors(self.cell_cv, self.N_c)))
            self._mult = np.ascontiguousarray(lay.recip_rows(half_complex_weights(self.N_c)))
        nG = lay.rfftn(n_g)
        gx = self._gv.reshape(-1, 3)
        out = np.zeros((3, 3))
        for k, uG in self._source_spectra(vG_ig, state, vGp):
            # sum_r u(r) irfftn(X)(r) = (1/N) sum_G Re[X(G) conj(U(G))]
            x = self._mult * (nG * np.conj(uG)).real * self._filter(k)
            out -= np.eye(3) * x.sum()
            x *= 1.0 / (2.0 * self.exponent(k))
            out += gx.T @ (gx * x.reshape(-1, 1))
        lay.sum(out)
        return out * (self.dv / float(np.prod(self.N_c)))


def periodic_features_reference(n_g, cell_cv, a_ig):
    """Direct evaluation of G_i(r) for every grid point (tests only).

    G(r) = (pi/a(r))^{3/2} sum_G n(G) exp(-G^2/(4 a(r))) exp(i G.r): a full
    reciprocal-space sum per point with the point's own exponent, no
    interpolation.  O(N_points * N_G)."""
    n_g = np.asarray(n_g, dtype=float)
    shape = n_g.shape
    cell_cv = np.asarray(cell_cv, dtype=float)
    nG = np.fft.fftn(n_g) / n_g.size
    rcell = 2.0 * np.pi * np.linalg.inv(cell_cv).T
    idx = [np.fft.fftfreq(n, 1.0 / n) for n in shape]
    I = np.stack(np.meshgrid(*idx, indexing="ij"), -1).reshape(-1, 3)
    Gv = I @ rcell
    g2 = (Gv ** 2).sum(-1)
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"),
                    -1).reshape(-1, 3)
    phase = np.exp(2j * np.pi * frac @ I.T)                   # (N, N_G)
    c = nG.reshape(-1)
    a = np.asarray(a_ig, dtype=float).reshape(len(a_ig), -1)
    out = np.empty_like(a)
    for i in range(len(a)):
        filt = np.exp(-g2[None, :] / (4.0 * a[i][:, None]))
        out[i] = (np.pi / a[i]) ** 1.5 * np.real((phase * filt * c[None, :]).sum(1))
    return out.reshape((len(a),) + shape)
