"""One-centre nonlocal features (descriptors/radial.py) against the analytic
convolution of Gaussian solid harmonics, their exponent derivative against
finite differences, and the adjoint against the forward map."""
import math

import numpy as np
import pytest

from cider_xc.descriptors.radial import RadialGaussianConvolver, scaled_sph_in

ALPHAS = [0.7, 2.0, 9.0]


def _real_harmonics(R_nv, lmax):
    from gpaw.sphere.spherical_harmonics import Y
    return np.array([[Y(L, *R) for L in range((lmax + 1) ** 2)] for R in R_nv])


def _setup(ratio):
    N = 400
    g = np.arange(N)
    beta = 0.4
    r = beta * g / (N - g)                  # GPAW-like radial grid
    dv = r * r * beta * N / (N - g) ** 2
    basis = []
    for al in ALPHAS:
        for l in range(3):
            f = r ** l * np.exp(-al * r * r)
            f[r > 12] = 0.0
            basis.append(f)
    conv = RadialGaussianConvolver(r, dv, np.array(basis), 4, 300, ratio=ratio)
    rng = np.random.default_rng(0)
    coef = np.zeros((9, len(basis)))
    for L in range(9):
        for i in range(len(ALPHAS)):
            coef[L, 3 * i + math.isqrt(L)] = rng.normal()
    R = rng.normal(size=(20, 3))
    R /= np.linalg.norm(R, axis=1)[:, None]
    Y = _real_harmonics(R, 4)
    a = np.exp(rng.uniform(np.log(0.05), np.log(50.0), size=(2, len(R), 300)))
    return conv, r[:300], coef, Y, a


def _analytic(r, coef, Y, a):
    """int exp(-a|r-r'|^2) r'^l exp(-al r'^2) Y_L(r'^) d^3r' =
    (pi/(a+al))^{3/2} (a/(a+al))^l r^l exp(-a al r^2/(a+al)) Y_L(r^)."""
    out = np.zeros_like(a)
    for L in range(len(coef)):
        l = math.isqrt(L)
        for i, al in enumerate(ALPHAS):
            c = coef[L, 3 * i + l]
            out += (c * (np.pi / (a + al)) ** 1.5 * (a / (a + al)) ** l * r ** l
                    * np.exp(-a * al * r ** 2 / (a + al)) * Y[None, :, L, None])
    return out


@pytest.mark.parametrize("ratio,tol", [(1.3, 2e-4), (1.15, 2e-5)])
def test_onecentre_features_match_analytic(ratio, tol):
    conv, r, coef, Y, a = _setup(ratio)
    G, dG, state = conv.forward(coef, Y, a)
    ref = _analytic(r, coef, Y, a)
    err = np.abs(G - ref).max() / np.abs(ref).max()
    # the exponent interpolation is O(h^4): halving log(ratio) gains > 8x
    assert err < tol, err


def test_onecentre_exponent_derivative_and_adjoint():
    conv, r, coef, Y, a = _setup(1.3)
    G, dG, state = conv.forward(coef, Y, a)
    h = 1e-6
    Gp, _, _ = conv.forward(coef, Y, a * (1 + h))
    Gm, _, _ = conv.forward(coef, Y, a * (1 - h))
    fd = (Gp - Gm) / (2 * h * a)
    assert np.abs(fd - dG).max() < 1e-6 * np.abs(dG).max()
    rng = np.random.default_rng(3)
    v = rng.normal(size=G.shape)
    dc = rng.normal(size=coef.shape)
    G2, _, _ = conv.forward(coef + dc, Y, a)      # linear in the coefficients
    assert abs((conv.adjoint(v, state) * dc).sum() - (v * (G2 - G)).sum()) \
        < 1e-10 * abs((v * (G2 - G)).sum())


def test_scaled_bessel_and_errors():
    import scipy.special
    # both branches (series below 12, recurrence above) and their seam
    x = np.concatenate([[0.0, 1e-5, 0.3, 2.0, 40.0, 700.0], np.linspace(0.0, 30.0, 3001)])
    for l in range(5):
        ref = scipy.special.spherical_in(l, x) * np.exp(-x)
        assert np.allclose(scaled_sph_in(l, x), ref, rtol=1e-12, atol=1e-300)
    with pytest.raises(ValueError, match=">= 0"):
        scaled_sph_in(0, [-1.0])
    conv, r, coef, Y, a = _setup(1.3)
    with pytest.raises(ValueError, match="positive"):
        conv.forward(coef, Y, -a)
    with pytest.raises(ValueError, match="lmax"):
        conv.forward(np.zeros((36, coef.shape[1])), np.zeros((20, 36)), a)
    with pytest.raises(ValueError, match="ratio"):
        RadialGaussianConvolver(r, r, coef, 2, 10, ratio=1.0)
