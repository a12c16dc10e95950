"""Semilocal descriptors: derivatives, uniform-gas values, tiny densities."""
import warnings

import numpy as np
import pytest

from cider_xc.descriptors import DescriptorSettings, FeatureChain
from cider_xc.descriptors import semilocal as sl


def _random_density(rng, n=200):
    rho = 10 ** rng.uniform(-6, 2, n)
    sigma = rho ** (8 / 3) * 10 ** rng.uniform(-3, 1.5, n)
    tauw = sigma / (8 * rho)
    tau = tauw + sl.CTAU * rho ** (5 / 3) * rng.uniform(0.05, 3, n)
    return rho, sigma, tau


def _fd(f, x, h):
    return (f(x * (1 + h)) - f(x * (1 - h))) / (2 * h * x)


def _check_fd(f, x, deriv, h=1e-5, rtol=1e-6):
    """Compare x * df/dx (analytic) with a central difference; the absolute
    tolerance is set by the size of f itself (rounding of f(x(1+-h)))."""
    fd = _fd(f, x, h) * x
    scale = np.abs(f(x)) + np.abs(deriv * x)
    assert np.all(np.abs(fd - deriv * x) <= rtol * scale), \
        np.max(np.abs(fd - deriv * x) / scale)


@pytest.mark.parametrize("settings", [DescriptorSettings(),
                                      DescriptorSettings(A=2.0, B=0.3, C=0.0),
                                      DescriptorSettings(A=0.7, B=0.0, C=0.6)])
def test_exponent_derivatives(settings, rng):
    n, s, t = _random_density(rng)
    a, dn, ds, dt = sl.exponent_derivs(n, s, t, settings)
    _check_fd(lambda x: sl.exponent(x, s, t, settings), n, dn)
    _check_fd(lambda x: sl.exponent(n, x, t, settings), s, ds)
    _check_fd(lambda x: sl.exponent(n, s, x, settings), t, dt)
    assert np.all(a > 0)


def test_alpha_and_p_derivatives(rng):
    n, s, t = _random_density(rng)
    al, dn, ds, dt = sl.iso_orbital_indicator(n, s, t)
    _check_fd(lambda x: sl.iso_orbital_indicator(x, s, t)[0], n, dn)
    _check_fd(lambda x: sl.iso_orbital_indicator(n, x, t)[0], s, ds)
    _check_fd(lambda x: sl.iso_orbital_indicator(n, s, x)[0], t, dt)
    p, dpn, dps = sl.reduced_gradient(n, s)
    _check_fd(lambda x: sl.reduced_gradient(x, s)[0], n, dpn)
    _check_fd(lambda x: sl.reduced_gradient(n, x)[0], s, dps)


def test_uniform_gas_limit_of_features(test_nl):
    """p = 0, alpha = 1, G_i at its analytic uniform value: x = 0, F_x = 1."""
    st = test_nl.settings
    n = np.array([1e-4, 0.01, 1.0, 37.0, 1e3])
    tau0 = sl.CTAU * n ** (5 / 3)
    # G of the uniform gas from its definition, int n exp(-a r^2) = n (pi/a)^(3/2)
    a, _ = test_nl.chain.exponents(n, 0 * n, tau0)
    G = n * (np.pi / a) ** 1.5
    assert np.allclose(G, np.array(st.uniform_gas_G())[:, None], rtol=1e-13)
    x, _ = test_nl.chain.transform(n, 0 * n, tau0, G)
    assert np.abs(x).max() < 1e-14
    res = test_nl.exchange(n, 0 * n, tau0, G)
    e_lda, _ = sl.lda_exchange(n)
    assert np.allclose(res.exc / e_lda, 1.0, rtol=1e-14, atol=0)


def test_tiny_and_zero_densities_are_quiet(test_nl):
    n = np.array([0.0, 1e-300, 1e-30, 1e-12, 1e-9])
    s = np.array([0.0, 1e-300, 1e-70, 1e-30, 1e-22])
    t = np.array([0.0, 1e-300, 1e-50, 1e-20, 1e-15])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, ad = test_nl.chain.exponents(n, s, t)
        G = np.ones_like(a)
        res = test_nl.exchange(n, s, t, G, np.ones_like(a), ad)
    for arr in (a, res.exc, res.vrho, res.vsigma, res.vtau, res.vG):
        assert np.all(np.isfinite(arr))
    assert np.all(a > 0)
    # below the cutoff nothing counts
    assert np.all(res.exc[:4] == 0) and np.all(res.vrho[:4] == 0)


def test_features_bounded(test_nl, rng):
    n, s, t = _random_density(rng, 500)
    G = 10 ** rng.uniform(-4, 3, (test_nl.settings.n_nonlocal, n.size))
    x, _ = test_nl.chain.transform(n, s, t, G)
    assert np.all(x >= -1) and np.all(x < 1)


def test_model_energy_density_derivatives(test_nl, rng):
    """vrho, vsigma, vtau, vG of the closed-shell model against finite differences
    (with G held fixed, no exponent chain)."""
    n, s, t = _random_density(rng, 100)
    G = 10 ** rng.uniform(-1, 1, (3, n.size))
    res = test_nl.exchange(n, s, t, G)
    e = lambda **kw: test_nl.exchange(**{"n": n, "sigma": s, "tau": t, "G": G, **kw}).exc  # noqa
    _check_fd(lambda x: e(n=x), n, res.vrho)
    _check_fd(lambda x: e(sigma=x), s, res.vsigma)
    _check_fd(lambda x: e(tau=x), t, res.vtau)
    for i in range(3):
        def ei(x, i=i):
            Gx = G.copy()
            Gx[i] = x
            return e(G=Gx)
        _check_fd(ei, G[i], res.vG[i])


def test_settings_validation():
    with pytest.raises(ValueError, match="C < A"):
        DescriptorSettings(A=0.5, C=0.5)
    with pytest.raises(ValueError, match="multipliers"):
        DescriptorSettings(multipliers=(1.0, -2.0))
    with pytest.raises(ValueError, match="unknown descriptor settings"):
        DescriptorSettings.fromdict({"A": 1.0, "D": 2})
    st = DescriptorSettings(A=1.5, B=0.2, C=0.1, multipliers=(1.0, 3.0))
    assert DescriptorSettings.fromdict(st.todict()) == st
    assert FeatureChain(st).g_scale.shape == (2,)
