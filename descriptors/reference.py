"""Brute-force reference for the nonlocal features (tests only).

G_f(r_g) = sum_h w_h n(r_h) exp(-a[f, g] |r_g - r_h|^2): a double sum over a
(fine) source grid, O(N_target N_source), written with numba.
"""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def _double_sum(targets, a, src, wn, out):
    nf = a.shape[0]
    for g in numba.prange(targets.shape[0]):
        for h in range(src.shape[0]):
            d2 = ((targets[g, 0] - src[h, 0]) ** 2 + (targets[g, 1] - src[h, 1]) ** 2
                  + (targets[g, 2] - src[h, 2]) ** 2)
            for f in range(nf):
                out[f, g] += wn[h] * math.exp(-a[f, g] * d2)


def nonlocal_features_bruteforce(targets, a, src_coords, src_weights, src_density):
    """Reference G (nf, N_target) by direct double summation.

    targets (N, 3); a (nf, N) exponents at the targets; src_* define the
    quadrature of the density on the source grid."""
    targets = np.ascontiguousarray(targets, dtype=float)
    a = np.ascontiguousarray(a, dtype=float).reshape(-1, len(targets))
    out = np.zeros(a.shape)
    _double_sum(targets, a, np.ascontiguousarray(src_coords, dtype=float),
                np.ascontiguousarray(src_weights * src_density, dtype=float), out)
    return out
