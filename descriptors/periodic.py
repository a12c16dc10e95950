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


@numba.njit(parallel=True, cache=True)
def _weights(a, tfloor, inv_logr, j_out, w_out, dw_out):
    """First stencil index j and weights w, dw/da per (feature, point)."""
    nf, N = a.shape
    for i in range(nf):
        for g in numba.prange(N):
            t = math.log(a[i, g] / B0) * inv_logr
            clamped = t < tfloor
            if clamped:
                t = tfloor
            j = math.floor(t)
            scale = 0.0 if clamped else inv_logr / a[i, g]
            _hermite6(t - j, scale, w_out[i, g], dw_out[i, g])
            j_out[i, g] = j - 2


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
def _accumulate(k, kmin, D, perm, ptr, w, dw, val, dval):
    """Add the lattice value D_k to every (feature, point) whose stencil
    contains k (first index j in k-NQ+1 .. k)."""
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
            val[i, g] += w[i, g, q] * D[g]
            dval[i, g] += dw[i, g, q] * D[g]


@numba.njit(cache=True)
def _gather(k, kmin, perm, ptr, w, coef, out):
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
            out[g] += w[i, g, q] * coef[i, g]


# --- features at off-grid points (PAW radial grids) -------------------------
# D_k is band-limited on the grid; it is evaluated at arbitrary points by
# periodic tricubic B-spline interpolation in grid-index coordinates (any
# cell shape): C^2 in the position (smooth forces), with the B-spline
# coefficients C_k = D_k prefiltered in reciprocal space (division by the
# B-spline's transfer function, folded into the Gaussian filter: no extra
# cost beyond one inverse FFT).  One position serves several entries
# (exponents), e.g. the all-electron and pseudo on-site densities and every
# feature.

@numba.njit(cache=True)
def _bspline4(t, w):
    """Cubic B-spline weights of nodes -1, 0, 1, 2 at t in [0, 1)."""
    u = 1.0 - t
    w[0] = u * u * u / 6.0
    w[1] = (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0
    w[2] = (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
    w[3] = t * t * t / 6.0


@numba.njit(cache=True)
def _stencil(x, wx, wy, wz):
    """First node (minus 1) and B-spline weights of a point x (3,) in
    grid-index coordinates; returns the integer parts i0, i1, i2."""
    i0 = math.floor(x[0])
    i1 = math.floor(x[1])
    i2 = math.floor(x[2])
    _bspline4(x[0] - i0, wx)
    _bspline4(x[1] - i1, wy)
    _bspline4(x[2] - i2, wz)
    return i0, i1, i2


@numba.njit(cache=True)
def _entry_sum(k, p, j, w, coef):
    """sum_e coef[p, e] w_pek over the entries of point p whose stencil has k."""
    s = 0.0
    for e in range(j.shape[1]):
        q = k - j[p, e]
        if 0 <= q < NQ:
            s += w[p, e, q] * coef[p, e]
    return s


@numba.njit(parallel=True, cache=True)
def _point_stencils(xp, n0, n1, n2, idx, wts):
    """Wrapped grid indices idx (M, 3, 4) and cubic B-spline weights wts
    (M, 3, 4) of every point (grid-index coordinates): made once per call,
    used for every lattice exponent."""
    for p in numba.prange(len(xp)):
        wx = np.empty(4)
        wy = np.empty(4)
        wz = np.empty(4)
        i0, i1, i2 = _stencil(xp[p], wx, wy, wz)
        for a in range(4):
            idx[p, 0, a] = (i0 - 1 + a) % n0
            idx[p, 1, a] = (i1 - 1 + a) % n1
            idx[p, 2, a] = (i2 - 1 + a) % n2
            wts[p, 0, a] = wx[a]
            wts[p, 1, a] = wy[a]
            wts[p, 2, a] = wz[a]


@numba.njit(cache=True, inline="always")
def _interp_stencil(D, idx, wts, p):
    val = 0.0
    for a in range(4):
        ia = idx[p, 0, a]
        wa = wts[p, 0, a]
        for b in range(4):
            ib = idx[p, 1, b]
            wab = wa * wts[p, 1, b]
            for c in range(4):
                val += wab * wts[p, 2, c] * D[ia, ib, idx[p, 2, c]]
    return val


@numba.njit(parallel=True, cache=True)
def _accumulate_points(k, D, idx, wts, kp, j, w, dw, val, dval):
    """Add D_k interpolated at point p to every entry e of p whose stencil
    contains k.  kp[p] = (first, last) lattice index any entry of p needs;
    idx, wts: _point_stencils."""
    M, E = j.shape
    for p in numba.prange(M):
        if k < kp[p, 0] or k > kp[p, 1]:
            continue
        needed = False               # the entries' windows may leave gaps
        for e in range(E):
            if 0 <= k - j[p, e] < NQ:
                needed = True
                break
        if not needed:
            continue
        v = _interp_stencil(D, idx, wts, p)
        for e in range(E):
            q = k - j[p, e]
            if 0 <= q < NQ:
                val[p, e] += w[p, e, q] * v
                dval[p, e] += dw[p, e, q] * v


@numba.njit(cache=True)
def _scatter_points(k, idx, wts, kp, j, w, coef, out):
    """Transpose of _accumulate_points: out += sum_e coef[p,e] w_pek L_p."""
    M = j.shape[0]
    for p in range(M):
        if k < kp[p, 0] or k > kp[p, 1]:
            continue
        s = _entry_sum(k, p, j, w, coef)
        if s == 0.0:
            continue
        for a in range(4):
            ia = idx[p, 0, a]
            wa = s * wts[p, 0, a]
            for b in range(4):
                ib = idx[p, 1, b]
                wab = wa * wts[p, 1, b]
                for c in range(4):
                    out[ia, ib, idx[p, 2, c]] += wab * wts[p, 2, c]


@numba.njit(cache=True)
def _bspline4_d(t, d):
    """t-derivatives of the cubic B-spline weights of _bspline4."""
    u = 1.0 - t
    d[0] = -0.5 * u * u
    d[1] = (9.0 * t * t - 12.0 * t) / 6.0
    d[2] = (-9.0 * t * t + 6.0 * t + 3.0) / 6.0
    d[3] = 0.5 * t * t


@numba.njit(parallel=True, cache=True)
def _gradient_points(k, D, xp, kp, j, w, coef, out):
    """out[p] += sum_e coef[p,e] w_pek grad_x D_k(x_p) (grid-index units)."""
    M = j.shape[0]
    n0, n1, n2 = D.shape
    for p in numba.prange(M):
        if k < kp[p, 0] or k > kp[p, 1]:
            continue
        s = _entry_sum(k, p, j, w, coef)
        if s == 0.0:
            continue
        wx = np.empty(4)
        wy = np.empty(4)
        wz = np.empty(4)
        dx = np.empty(4)
        dy = np.empty(4)
        dz = np.empty(4)
        i0, i1, i2 = _stencil(xp[p], wx, wy, wz)
        _bspline4_d(xp[p, 0] - i0, dx)
        _bspline4_d(xp[p, 1] - i1, dy)
        _bspline4_d(xp[p, 2] - i2, dz)
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        for a in range(4):
            ia = (i0 - 1 + a) % n0
            for b in range(4):
                ib = (i1 - 1 + b) % n1
                for c in range(4):
                    v = D[ia, ib, (i2 - 1 + c) % n2]
                    g0 += dx[a] * wy[b] * wz[c] * v
                    g1 += wx[a] * dy[b] * wz[c] * v
                    g2 += wx[a] * wy[b] * dz[c] * v
        out[p, 0] += s * g0
        out[p, 1] += s * g1
        out[p, 2] += s * g2


class PointSet:
    """Off-grid points for :meth:`PeriodicGaussianConvolver.forward`.

    xp : (M, 3) positions in grid-index coordinates (fractional * N_c)
    a_pe : (M, E) exponents of the E entries of every point
    """

    def __init__(self, xp, a_pe):
        self.xp = np.ascontiguousarray(xp, dtype=float)
        self.a = np.ascontiguousarray(a_pe, dtype=float)
        if self.xp.ndim != 2 or self.xp.shape[1] != 3 or self.a.ndim != 2 \
                or len(self.a) != len(self.xp):
            raise ValueError("PointSet needs positions (M, 3) and exponents (M, E)")
        if not np.all(self.a > 0):
            raise ValueError("nonlocal exponents must be positive")


class PeriodicGaussianConvolver:
    """Features G_i of a periodic density on one uniform grid.

    Parameters
    ----------
    cell_cv : (3, 3) cell vectors in bohr (rows)
    N_c : grid points along each cell vector
    ratio : spacing of the exponent lattice (b_{k+1}/b_k)
    workers : FFT threads (scipy.fft)
    """

    def __init__(self, cell_cv, N_c, ratio=1.5, workers=None):
        if not ratio > 1.0:
            raise ValueError(f"exponent ratio must be > 1, got {ratio}")
        self.cell_cv = np.asarray(cell_cv, dtype=float)
        self.N_c = tuple(int(n) for n in N_c)
        self.ratio = float(ratio)
        self.workers = workers
        self.g2 = reciprocal_g2(self.cell_cv, self.N_c)
        self.dv = abs(np.linalg.det(self.cell_cv)) / np.prod(self.N_c)
        g2pos = self.g2[self.g2 > 0]
        gmin2 = g2pos.min() if g2pos.size else 1.0
        self.b_floor = gmin2 / (4.0 * FLOOR_EXP)
        self.inv_logr = 1.0 / math.log(self.ratio)
        self.t_floor = math.log(self.b_floor / B0) * self.inv_logr
        self.n_convolutions = 0        # of the last call (for logs/benchmarks)
        self._gv = None                # G vectors, made on the first strain derivative
        self._filters = {}             # k -> exp(-G^2 / 4 b_k), up to FILTER_CACHE_BYTES

    def _prefilter(self):
        """1 / (transfer function of the cubic B-spline) on the half-complex
        grid: C = D * this gives the interpolation coefficients."""
        if getattr(self, "_binv", None) is None:
            th = [2.0 * np.pi * np.fft.fftfreq(n) for n in self.N_c[:2]]
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
            if (len(self._filters) + 1) * f.nbytes <= FILTER_CACHE_BYTES:
                self._filters[k] = f
        return f

    def forward(self, n_g, a_ig, points=None):
        """G_i(r), dG_i/da_i(r) for density n_g (grid shape) and exponents a_ig.

        a_ig: (nf,) + grid shape.  Returns G, dG_da of the same shape and a
        state object for :meth:`adjoint`.  With ``points`` (a
        :class:`PointSet`) the features of the same density at those
        off-grid points are returned too: G, dG, state, Gp, dGp with Gp, dGp
        shaped (M, E) like points.a."""
        shape = n_g.shape
        if shape != self.N_c:
            raise ValueError(f"density grid {shape} does not match the convolver's {self.N_c}")
        a = np.ascontiguousarray(a_ig, dtype=float).reshape(len(a_ig), -1)
        if not np.all(a > 0):
            raise ValueError("nonlocal exponents must be positive")
        nf, N = a.shape
        j = np.empty((nf, N), dtype=np.int64)
        w = np.empty((nf, N, NQ))
        dw = np.empty((nf, N, NQ))
        _weights(a, self.t_floor, self.inv_logr, j, w, dw)
        kmin, kmax = int(j.min()), int(j.max()) + NQ - 1
        pts = None
        if points is not None:
            M, E = points.a.shape
            jp = np.empty((M, E), dtype=np.int64)
            wp = np.empty((M, E, NQ))
            dwp = np.empty((M, E, NQ))
            _weights(points.a, self.t_floor, self.inv_logr, jp, wp, dwp)
            kp = np.stack([jp.min(1), jp.max(1) + NQ - 1], axis=1) if M else \
                np.zeros((0, 2), dtype=np.int64)
            if M:
                kmin, kmax = min(kmin, int(kp[:, 0].min())), max(kmax, int(kp[:, 1].max()))
            Dp = np.zeros((M, E))
            dDp = np.zeros((M, E))
            idx = np.empty((M, 3, 4), dtype=np.int64)
            wts = np.empty((M, 3, 4))
            _point_stencils(points.xp, shape[0], shape[1], shape[2], idx, wts)
        perm, ptr = _buckets(j, kmin, kmax - kmin + 1)
        nG = scipy.fft.rfftn(n_g, workers=self.workers)
        D = np.zeros((nf, N))
        dD = np.zeros((nf, N))
        for k in range(kmin, kmax + 1):
            Dk = scipy.fft.irfftn(nG * self._filter(k), s=shape, workers=self.workers)
            _accumulate(k, kmin, np.ascontiguousarray(Dk).reshape(-1), perm, ptr, w, dw, D, dD)
            if points is not None and M:
                Ck = scipy.fft.irfftn(nG * (self._filter(k) * self._prefilter()), s=shape,
                                      workers=self.workers)
                _accumulate_points(k, Ck, idx, wts, kp, jp, wp, dwp, Dp, dDp)
        self.n_convolutions = kmax - kmin + 1
        pref = (np.pi / a) ** 1.5
        G = pref * D
        dG = pref * (dD - 1.5 * D / a)
        if points is not None:
            prefp = (np.pi / points.a) ** 1.5
            pts = (points.xp, kp, jp, wp, prefp, idx, wts)
        state = (a, pref, perm, ptr, w, kmin, kmax, pts)
        G, dG = G.reshape((nf,) + shape), dG.reshape((nf,) + shape)
        if points is None:
            return G, dG, state
        return G, dG, state, prefp * Dp, prefp * (dDp - 1.5 * Dp / points.a)

    def _source_spectra(self, vG_ig, state, vGp=None):
        """(k, U_k) for every lattice exponent: U_k = rfftn of the convolution
        source sum_i vG_i (pi/a_i)^{3/2} w_ik(r) (adjoint and strain terms),
        plus the point sources (vGp: dE/dG per point entry, not per volume)
        spread back by the transposed interpolation."""
        a, pref, perm, ptr, w, kmin, kmax, pts = state
        nf, N = a.shape
        coef = np.ascontiguousarray(np.asarray(vG_ig, dtype=float).reshape(nf, N) * pref)
        if vGp is not None:
            if pts is None:
                raise ValueError("point sources given but the forward call had no points")
            xp, kp, jp, wp, prefp, idx, wts = pts
            coefp = np.ascontiguousarray(np.asarray(vGp, dtype=float) * prefp / self.dv)
        u = np.empty(N)
        up = np.empty(self.N_c) if vGp is not None and len(xp) else None
        for k in range(kmin, kmax + 1):
            _gather(k, kmin, perm, ptr, w, coef, u)
            U = scipy.fft.rfftn(u.reshape(self.N_c), workers=self.workers)
            if up is not None:
                up[:] = 0.0
                _scatter_points(k, idx, wts, kp, jp, wp, coefp, up)
                U += scipy.fft.rfftn(up, workers=self.workers) * self._prefilter()
            yield k, U

    def adjoint(self, vG_ig, state, vGp=None):
        """dE/dn(r') per unit volume, given dE/dG_i(r) per unit volume on the
        grid and (optionally) dE/dG of the point entries of the forward
        call (absolute, shaped like the points' exponents)."""
        acc = None
        for k, uG in self._source_spectra(vG_ig, state, vGp):
            uG *= self._filter(k)
            acc = uG if acc is None else acc + uG
        return scipy.fft.irfftn(acc, s=self.N_c, workers=self.workers)

    def point_gradient(self, n_g, vGp, state):
        """d/dx_p of sum_pe vGp[p,e] G_pe with the exponents held fixed: the
        derivative with respect to the point positions (grid-index
        coordinates, (M, 3)), for forces on the centres of radial grids."""
        a, pref, perm, ptr, w, kmin, kmax, pts = state
        if pts is None:
            raise ValueError("the forward call had no points")
        xp, kp, jp, wp, prefp = pts[:5]
        coef = np.ascontiguousarray(np.asarray(vGp, dtype=float) * prefp)
        out = np.zeros((len(xp), 3))
        nG = scipy.fft.rfftn(n_g, workers=self.workers)
        for k in range(kmin, kmax + 1):
            Ck = scipy.fft.irfftn(nG * (self._filter(k) * self._prefilter()), s=self.N_c,
                                  workers=self.workers)
            _gradient_points(k, np.ascontiguousarray(Ck), xp, kp, jp, wp, coef, out)
        return out

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
        coordinates).  Returns (3, 3)."""
        shape = self.N_c
        if n_g.shape != shape:
            raise ValueError(f"density grid {n_g.shape} does not match {shape}")
        if self._gv is None:
            self._gv = reciprocal_vectors(self.cell_cv, self.N_c)
            self._mult = half_complex_weights(shape)
        nG = scipy.fft.rfftn(n_g, workers=self.workers)
        gx = self._gv.reshape(-1, 3)
        out = np.zeros((3, 3))
        for k, uG in self._source_spectra(vG_ig, state, vGp):
            # sum_r u(r) irfftn(X)(r) = (1/N) sum_G Re[X(G) conj(U(G))]
            x = self._mult * (nG * np.conj(uG)).real * self._filter(k)
            out -= np.eye(3) * x.sum()
            x *= 1.0 / (2.0 * self.exponent(k))
            out += gx.T @ (gx * x.reshape(-1, 1))
        return out * (self.dv / n_g.size)


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
