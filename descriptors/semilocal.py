"""Semilocal quantities of a closed-shell density and their derivatives.

All functions take the density n, sigma = |grad n|^2 and tau (arrays of the
same shape, atomic units) of a *closed-shell* density; spin-polarised
densities are handled by the callers through n = 2 n_sigma (exact spin
scaling).  Points where ``n <= rho_cutoff`` are treated as vacuum: every
returned quantity is finite there and every derivative is 0.
"""
from __future__ import annotations

import numpy as np

PI = np.pi
CX = 0.75 * (3.0 / PI) ** (1.0 / 3.0)          # e_x^LDA = -CX n^(4/3)
CP = 4.0 * (3.0 * PI ** 2) ** (2.0 / 3.0)      # p = sigma / (CP n^(8/3))
CTAU = 0.3 * (3.0 * PI ** 2) ** (2.0 / 3.0)    # tau_0 = CTAU n^(5/3)
KAPPA_PBE = 0.804
MU_PBE = 0.2195149727645171
KEXP = PI * 2.0 ** (-2.0 / 3.0)                # pi (n/2)^(2/3) = KEXP n^(2/3)


def _safe(n, rho_cutoff):
    """(mask of points that count, density with vacuum points set to 1)."""
    n = np.asarray(n, dtype=float)
    mask = n > rho_cutoff
    return mask, np.where(mask, n, 1.0)


def lda_exchange(n):
    """e_x^LDA(n) = -(3/4)(3/pi)^(1/3) n^(4/3) and its derivative d/dn."""
    n = np.maximum(np.asarray(n, dtype=float), 0.0)
    n13 = np.cbrt(n)
    e = -CX * n * n13
    return e, -4.0 / 3.0 * CX * n13


def reduced_gradient(n, sigma, rho_cutoff=0.0):
    """p = s^2 = sigma / (4 (3 pi^2)^(2/3) n^(8/3)).

    Returns p, dp/dn, dp/dsigma (zero at vacuum points)."""
    mask, ns = _safe(n, rho_cutoff)
    sigma = np.where(mask, sigma, 0.0)
    denom = CP * ns ** (8.0 / 3.0)
    p = sigma / denom
    dp_dn = -8.0 / 3.0 * p / ns
    dp_ds = np.where(mask, 1.0 / denom, 0.0)
    return p, dp_dn, dp_ds


def iso_orbital_indicator(n, sigma, tau, rho_cutoff=0.0, eta=0.0):
    """alpha = (tau - tau_W)/(tau_0 + eta tau_W) with derivatives d/dn,
    d/dsigma, d/dtau.

    eta = 0 is the usual iso-orbital indicator.  eta > 0 (r2SCAN's
    regularisation) keeps alpha and its derivatives bounded where tau_W >>
    tau_0 (density tails, one-orbital regions): there dalpha/dtau ~
    1/(eta tau_W) instead of 1/tau_0 ~ n^(-5/3), so the tau potential of a
    functional of alpha no longer diverges as n^(-1/3) where the density
    vanishes.  tau, tau_W and tau_0 all scale as lambda^5 under uniform
    scaling, so alpha stays scale-invariant, and tau_W = 0 keeps alpha = 1
    in the uniform gas.

    At vacuum points alpha = 1 (uniform-gas value) with zero derivatives."""
    mask, ns = _safe(n, rho_cutoff)
    sigma = np.where(mask, sigma, 0.0)
    tau = np.where(mask, tau, 0.0)
    tau0 = CTAU * ns ** (5.0 / 3.0)
    tauw = sigma / (8.0 * ns)
    den = tau0 + eta * tauw
    alpha = np.where(mask, (tau - tauw) / den, 1.0)
    da_dn = np.where(mask, (tauw + alpha * (eta * tauw - 5.0 / 3.0 * tau0)) / (den * ns), 0.0)
    da_ds = np.where(mask, -(1.0 + eta * alpha) / (8.0 * ns * den), 0.0)
    da_dt = np.where(mask, 1.0 / den, 0.0)
    return alpha, da_dn, da_ds, da_dt


def pbe_enhancement(p):
    """F_x^PBE as a function of p = s^2, and dF/dp."""
    d = 1.0 + MU_PBE * p / KAPPA_PBE
    return 1.0 + KAPPA_PBE - KAPPA_PBE / d, MU_PBE / d ** 2


def exponent(n, sigma, tau, settings):
    """Base exponent a(r) = pi (n/2)^(2/3) [A + B p + C (tau/tau_0 - 1)].

    Multiply by the multipliers m_i of ``settings`` for a_i.  Vacuum points
    get a = pi A (any positive number would do: they carry no weight)."""
    return exponent_derivs(n, sigma, tau, settings)[0]


def exponent_derivs(n, sigma, tau, settings):
    """a(r) and its derivatives da/dn, da/dsigma, da/dtau.

    Returns
    -------
    a, da_dn, da_ds, da_dt : arrays shaped like n
    """
    A, B, C = settings.A, settings.B, settings.C
    mask, ns = _safe(n, settings.rho_cutoff)
    p, dp_dn, dp_ds = reduced_gradient(n, sigma, settings.rho_cutoff)
    tau = np.where(mask, np.maximum(tau, 0.0), 0.0)
    tau0 = CTAU * ns ** (5.0 / 3.0)
    t = np.where(mask, tau / tau0, 1.0)
    h = A + B * p + C * (t - 1.0)
    n23 = KEXP * ns ** (2.0 / 3.0)
    a = n23 * h
    da_dn = 2.0 / 3.0 * a / ns + n23 * (B * dp_dn - C * 5.0 / 3.0 * t / ns)
    da_ds = n23 * B * dp_ds
    da_dt = n23 * C / tau0
    zero = np.zeros_like(a)
    a = np.where(mask, a, KEXP * A)
    return (a, np.where(mask, da_dn, zero), np.where(mask, da_ds, zero),
            np.where(mask, da_dt, zero))
