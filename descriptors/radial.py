"""Nonlocal features of a one-centre function on a radial grid.

For a function given in real spherical harmonics around one centre,

    f(r) = sum_L f_L(|r|) Y_L(r^),

the features of the common one-sided definition

    G(r) = int f(r') exp(-a |r - r'|^2) d^3r'

are exact in angle through the expansion exp(2 a r.r') = 4 pi sum_L
i_l(2 a r r') Y_L(r^) Y_L(r'^) (i_l: modified spherical Bessel function):

    G(r) = sum_L Y_L(r^) int K_l(a; r, r') f_L(r') r'^2 dr',
    K_l(a; r, r') = 4 pi exp(-a (r - r')^2) [exp(-2 a r r') i_l(2 a r r')].

a varies from point to point, so (as for the periodic features, see
periodic.py) G = (pi/a)^{3/2} D(a) with the normalised smoothing D(b) on the
same even-tempered lattice b_k = ratio^k, interpolated in log b by the same
6-point Hermite pieces (C^1 in a, error O(h^4)).

The radial functions f_L are linear combinations of a fixed basis phi_beta
(for PAW: the partial-wave products, the core density and the compensation
shapes), so the lattice tables T[k, l, beta, j] = int K_l(b_k; r_j, r')
phi_beta(r') r'^2 dr' * (b_k/pi)^{3/2} depend only on the basis and are
computed once per exponent.  numpy and numba; no GPAW here.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .periodic import B0, NQ, _weights

NO_FLOOR = -1.0e9          # no clamping of the exponent lattice (f is compact)


_X_SERIES = 12.0           # power series below, upward recurrence from i_0, i_1 above


@numba.njit(cache=True)
def _scaled_sph_in_all(lmax, x, out):
    """out[l, i] = exp(-x_i) i_l(x_i), l = 0..lmax, x_i >= 0.

    x < 12: the power series i_l(x) = x^l/(2l+1)!! sum_k (x^2/2)^k /
    (k! (2l+3)(2l+5)...(2l+2k+1)) (positive terms, no cancellation);
    x >= 12: closed forms of i_0, i_1 scaled by exp(-x) and the upward
    recurrence i_{l+1} = i_{l-1} - (2l+1)/x i_l (stable for x > l^2)."""
    for i in range(len(x)):
        xi = x[i]
        if xi < _X_SERIES:
            ex = math.exp(-xi)
            y = 0.5 * xi * xi
            pw = 1.0
            for l in range(lmax + 1):
                if l > 0:
                    pw *= xi / (2 * l + 1)
                term = 1.0
                total = 1.0
                k = 0
                while term > 1e-17 * total:
                    k += 1
                    term *= y / (k * (2 * l + 2 * k + 1))
                    total += term
                out[l, i] = ex * pw * total
        else:
            e2 = math.exp(-2.0 * xi)
            out[0, i] = (1.0 - e2) / (2.0 * xi)
            if lmax >= 1:
                out[1, i] = (0.5 * (1.0 + e2) - out[0, i]) / xi
            for l in range(1, lmax):
                out[l + 1, i] = out[l - 1, i] - (2 * l + 1) / xi * out[l, i]


def scaled_sph_in_all(lmax, x):
    """exp(-x) i_l(x) for l = 0..lmax (array (lmax+1,) + x.shape), x >= 0:
    modified spherical Bessel functions of the first kind without overflow."""
    x = np.asarray(x, dtype=float)
    if np.any(x < 0):
        raise ValueError("scaled_sph_in needs x >= 0")
    out = np.empty((int(lmax) + 1, x.size))
    _scaled_sph_in_all(int(lmax), np.ascontiguousarray(x).reshape(-1), out)
    return out.reshape((int(lmax) + 1,) + x.shape)


def scaled_sph_in(l, x):
    """exp(-x) i_l(x) for x >= 0 (no overflow)."""
    return scaled_sph_in_all(l, x)[l]


@numba.njit(cache=True)
def _lattice_gather(j, w, dw, kmin, D_kp, out, dout):
    """out[e, p] = sum_q w[e, p, q] D_kp[j[e, p] - kmin + q, p] (and dout with dw)."""
    E, P = j.shape
    for e in range(E):
        for p in range(P):
            k0 = j[e, p] - kmin
            s = 0.0
            ds = 0.0
            for q in range(NQ):
                v = D_kp[k0 + q, p]
                s += w[e, p, q] * v
                ds += dw[e, p, q] * v
            out[e, p] = s
            dout[e, p] = ds


@numba.njit(cache=True)
def _lattice_scatter(j, w, src, kmin, A_kp):
    """Transpose of _lattice_gather: A_kp[j[e, p] - kmin + q, p] += w[e, p, q] src[e, p]."""
    E, P = j.shape
    for e in range(E):
        for p in range(P):
            k0 = j[e, p] - kmin
            c = src[e, p]
            for q in range(NQ):
                A_kp[k0 + q, p] += w[e, p, q] * c


class RadialGaussianConvolver:
    """Features of sum_L f_L(r) Y_L at points (r_j, direction n) of one
    centre, with per-point exponents.

    Parameters
    ----------
    r_g : radial grid (bohr), r_g[0] may be 0
    dv_g : radial integration weights r^2 dr
    basis_bg : (nbasis, ng) radial functions that the f_L are made of
    lmax : largest l of the expansion
    n_out : number of radial output points (r_j = r_g[:n_out])
    ratio : spacing of the exponent lattice (as the periodic convolver)
    """

    def __init__(self, r_g, dv_g, basis_bg, lmax, n_out, ratio=1.3):
        if not ratio > 1.0:
            raise ValueError(f"exponent ratio must be > 1, got {ratio}")
        self.r_g = np.asarray(r_g, dtype=float)
        self.dv_g = np.asarray(dv_g, dtype=float)
        self.basis_bg = np.asarray(basis_bg, dtype=float)
        # the basis lives inside the sphere: integrate only where it is
        # nonzero (to 1e-14 of its largest value)
        big = np.abs(self.basis_bg).max(0)
        nz = np.nonzero(big > 1e-14 * big.max())[0]
        self.n_in = int(nz[-1]) + 1 if len(nz) else 1
        self.lmax = int(lmax)
        self.n_out = int(n_out)
        self.ratio = float(ratio)
        self.inv_logr = 1.0 / math.log(self.ratio)
        self._tables = {}
        self._stack = None

    def table(self, k):
        """T[l, beta, j] = (b/pi)^{3/2} int K_l(b; r_j, r') phi_beta(r') r'^2 dr'
        at b = b_k."""
        T = self._tables.get(k)
        if T is None:
            b = B0 * self.ratio ** k
            r_out = self.r_g[:self.n_out]
            r_in = self.r_g[:self.n_in]
            w_bg = self.basis_bg[:, :self.n_in] * self.dv_g[None, :self.n_in]
            x = 2.0 * b * np.outer(r_out, r_in)
            gauss = np.exp(-b * (r_out[:, None] - r_in[None, :]) ** 2)
            norm = 4.0 * np.pi * (b / np.pi) ** 1.5
            T = np.empty((self.lmax + 1, len(w_bg), self.n_out))
            S = scaled_sph_in_all(self.lmax, x)                    # (l, j, g)
            for l in range(self.lmax + 1):
                K = norm * gauss * S[l]                            # (j, g)
                T[l] = w_bg @ K.T
            self._tables[k] = T
        return T

    def stacked(self, kmin, kmax):
        """The tables of k = kmin..kmax as one array (l, beta, k, j), kept
        for the last range asked for (the SCF asks for the same range)."""
        key = (kmin, kmax)
        if self._stack is None or self._stack[0] != key:
            # layout (l, beta, k, j): T[l] reshapes to (beta, k * j) without a copy
            self._stack = (key, np.ascontiguousarray(np.stack(
                [self.table(k) for k in range(kmin, kmax + 1)], axis=2)))
        return self._stack[1]

    def forward(self, coef_Lb, Y_nL, a_enj):
        """Features of f_L = sum_beta coef_Lb[L, beta] phi_beta.

        coef_Lb : (nL, nbasis) with nL <= (lmax+1)^2
        Y_nL : (ndir, >= nL) real spherical harmonics of the directions
        a_enj : (E, ndir, n_out) exponents (positive)
        Returns G, dG/da (E, ndir, n_out) and a state for :meth:`adjoint`.
        """
        a = np.ascontiguousarray(a_enj, dtype=float)
        if not np.all(a > 0):
            raise ValueError("nonlocal exponents must be positive")
        coef_Lb = np.asarray(coef_Lb, dtype=float)
        nL = len(coef_Lb)
        if nL > (self.lmax + 1) ** 2:
            raise ValueError(f"{nL} harmonics need lmax >= {math.isqrt(nL - 1)}, "
                             f"this convolver has lmax = {self.lmax}")
        E, nd, nj = a.shape
        flat = a.reshape(E, -1)
        j = np.empty(flat.shape, dtype=np.int64)
        w = np.empty(flat.shape + (NQ,))
        dw = np.empty(flat.shape + (NQ,))
        _weights(flat, NO_FLOOR, self.inv_logr, j, w, dw)
        kmin, kmax = int(j.min()), int(j.max()) + NQ - 1
        l_L = np.array([math.isqrt(L) for L in range(nL)])
        Y = np.ascontiguousarray(np.asarray(Y_nL)[:, :nL])
        # D_k(n, j) for every lattice exponent the stencils touch, all k at
        # once: f_kLj = sum_b coef_Lb T[k, l, b, j] per l shell, then Y
        T = self.stacked(kmin, kmax)                                 # (l, b, k, j)
        K = kmax - kmin + 1
        f = np.empty((K, nL, nj))
        for l in range(math.isqrt(nL - 1) + 1):
            Ls = slice(l * l, min(nL, (l + 1) ** 2))
            fl = coef_Lb[Ls] @ T[l].reshape(len(T[l]), -1)          # (m, k * j)
            f[:, Ls] = fl.reshape(-1, K, nj).transpose(1, 0, 2)
        Dk = np.matmul(Y, f)                                         # (k, n, j)
        D = np.empty(flat.shape)
        dD = np.empty(flat.shape)
        _lattice_gather(j, w, dw, kmin, Dk.reshape(len(Dk), -1), D, dD)
        pref = (np.pi / flat) ** 1.5
        G = pref * D
        dG = pref * (dD - 1.5 * D / flat)
        state = (j, w, pref, kmin, kmax, l_L, Y, (nd, nj))
        return G.reshape(E, nd, nj), dG.reshape(E, nd, nj), state

    def adjoint(self, vG_enj, state):
        """dE/dcoef_Lb from vG = dE/dG (E, ndir, n_out) at fixed exponents."""
        j, w, pref, kmin, kmax, l_L, Y, (nd, nj) = state
        v = np.asarray(vG_enj, dtype=float).reshape(len(w), -1)
        A = np.zeros((kmax - kmin + 1, nd * nj))
        _lattice_scatter(j, w, np.ascontiguousarray(v * pref), kmin, A)
        A = A.reshape(-1, nd, nj)
        A_Lj = np.matmul(Y.T, A)                                    # (k, L, j)
        T = self.stacked(kmin, kmax)                                # (l, b, k, j)
        K = kmax - kmin + 1
        out = np.empty((len(l_L), self.basis_bg.shape[0]))
        for l in range(math.isqrt(len(l_L) - 1) + 1):
            Ls = slice(l * l, min(len(l_L), (l + 1) ** 2))
            a2 = A_Lj[:, Ls].transpose(1, 0, 2).reshape(-1, K * nj)
            out[Ls] = a2 @ T[l].reshape(len(T[l]), -1).T
        return out
