"""Bounded, scale-invariant model inputs and their Jacobian.

``FeatureChain(settings)`` maps the semilocal inputs (n, sigma, tau) of a
closed-shell density and the nonlocal integrals G_i to the model inputs

    x_p     = p / (1 + p)                    in [0, 1)
    x_alpha = r(alpha)                       in (-3, 1)
    x_gi    = r(g_i)                         in (-3, 1)

with g_i = G_i (m_i A)^(3/2) / 2 and the bounded ratio map
r(y) = (y - 1)/(y + 1) for y >= 0, continued to negative y (numerical noise:
tau < tau_W, a fitted density slightly below 0) by (3y - 1)/(1 - y), which
matches its value and slope at y = 0, so that F_x and the potential stay
continuous there.  All are 0 in the uniform electron gas.
Shapes: inputs (N,), G (n_nonlocal, N); x (n_features, N).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .semilocal import exponent_derivs, iso_orbital_indicator, reduced_gradient


@dataclasses.dataclass
class FeatureJacobian:
    """Partial derivatives of the model inputs (each shaped (N,))."""
    dxp_dn: np.ndarray
    dxp_ds: np.ndarray
    dxa_dn: np.ndarray
    dxa_ds: np.ndarray
    dxa_dt: np.ndarray
    dxg_dG: np.ndarray          # (n_nonlocal, N)
    p: np.ndarray
    dp_dn: np.ndarray
    dp_ds: np.ndarray


def ratio_map(y):
    """r(y) = (y - 1)/(y + 1) (y >= 0), (3y - 1)/(1 - y) (y < 0), and dr/dy.

    Monotonic, C^1, bounded in (-3, 1), r(1) = 0."""
    y = np.asarray(y, dtype=float)
    pos = y >= 0.0
    d = np.where(pos, y + 1.0, 1.0 - y)
    r = np.where(pos, y - 1.0, 3.0 * y - 1.0) / d
    return r, 2.0 / (d * d)


class FeatureChain:
    """Descriptor pipeline of one set of :class:`DescriptorSettings`."""

    def __init__(self, settings):
        self.settings = settings
        m = np.asarray(settings.multipliers)
        self.multipliers = m
        self.g_scale = (m * settings.A) ** 1.5 / 2.0

    def exponents(self, n, sigma, tau):
        """a_i(r) for every nonlocal feature and d a_i/d(n, sigma, tau).

        Returns a_i (n_nonlocal, N) and (da_dn, da_ds, da_dt) of the base
        exponent (multiply by m_i)."""
        a, da_dn, da_ds, da_dt = exponent_derivs(n, sigma, tau, self.settings)
        return self.multipliers[:, None] * a[None, :], (da_dn, da_ds, da_dt)

    def transform(self, n, sigma, tau, G):
        """Model inputs x (n_features, N) and their :class:`FeatureJacobian`."""
        s = self.settings
        G = np.asarray(G, dtype=float)
        if G.ndim != 2 or G.shape[0] != s.n_nonlocal:
            raise ValueError(
                f"expected G of shape ({s.n_nonlocal}, N), got {G.shape}")
        p, dp_dn, dp_ds = reduced_gradient(n, sigma, s.rho_cutoff)
        alpha, da_dn, da_ds, da_dt = iso_orbital_indicator(n, sigma, tau, s.rho_cutoff,
                                                           s.alpha_eta)
        x = np.empty((s.n_features, p.size))
        x[0] = p / (1.0 + p)
        dxp = 1.0 / (1.0 + p) ** 2
        x[1], dxa = ratio_map(alpha)
        x[2:], dxg = ratio_map(G * self.g_scale[:, None])
        dxg = dxg * self.g_scale[:, None]
        jac = FeatureJacobian(dxp * dp_dn, dxp * dp_ds, dxa * da_dn, dxa * da_ds,
                              dxa * da_dt, dxg, p, dp_dn, dp_ds)
        return x, jac
