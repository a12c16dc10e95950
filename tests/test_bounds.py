"""Trust by construction: the regularised alpha, the C^1 ratio map, the
bounded output map of F_x, and the shipped default's range over the whole
descriptor box."""
import dataclasses

import numpy as np
import pytest

import cider_xc
from cider_xc.descriptors import DescriptorSettings, FeatureChain
from cider_xc.descriptors import semilocal as sl
from cider_xc.descriptors.features import ratio_map
from cider_xc.model import CiderFunctional, FxBound, TailGate
from test_semilocal import _check_fd, _random_density


@pytest.mark.parametrize("eta", [0.0, 0.01, 1.0])
def test_regularised_alpha_derivatives(eta, rng):
    n, s, t = _random_density(rng)
    al, dn, ds, dt = sl.iso_orbital_indicator(n, s, t, eta=eta)
    _check_fd(lambda x: sl.iso_orbital_indicator(x, s, t, eta=eta)[0], n, dn)
    _check_fd(lambda x: sl.iso_orbital_indicator(n, x, t, eta=eta)[0], s, ds)
    _check_fd(lambda x: sl.iso_orbital_indicator(n, s, x, eta=eta)[0], t, dt)


def test_regularised_alpha_scaling_and_uniform_gas(rng):
    n, s, t = _random_density(rng)
    al = sl.iso_orbital_indicator(n, s, t, eta=0.01)[0]
    # uniform scaling: n -> l^3 n, sigma -> l^8 sigma, tau -> l^5 tau
    for lam in (0.3, 2.7):
        al2 = sl.iso_orbital_indicator(lam ** 3 * n, lam ** 8 * s, lam ** 5 * t, eta=0.01)[0]
        assert np.allclose(al2, al, rtol=1e-12, atol=0)
    tau0 = sl.CTAU * n ** (5 / 3)
    assert np.allclose(sl.iso_orbital_indicator(n, 0 * n, tau0, eta=0.01)[0], 1.0,
                       rtol=1e-14, atol=0)


def test_regularised_alpha_bounds_the_tau_potential():
    """In an exponential tail n = exp(-2 k r), tau = tau_W (one orbital),
    dalpha/dtau ~ 1/tau_0 diverges as n^(-5/3) without the regularisation and
    stays ~ 1/(eta tau_W) ~ 1/n with it: e_x^LDA dalpha/dtau -> 0."""
    n = np.logspace(-12, -6, 7)
    k = 1.0
    sigma = (2 * k * n) ** 2
    tau = sigma / (8 * n)
    e0 = -sl.lda_exchange(n)[0]
    v0 = e0 * sl.iso_orbital_indicator(n, sigma, tau, eta=0.0)[3]
    v1 = e0 * sl.iso_orbital_indicator(n, sigma, tau, eta=0.01)[3]
    assert v0[0] > 1e3 and np.all(np.diff(v0) < 0)          # n^(-1/3) divergence
    assert v1[0] < 0.05 and np.all(np.diff(v1) > 0)          # n^(1/3) -> 0


def test_ratio_map_is_c1_and_bounded():
    y = np.concatenate([-np.logspace(-8, 8, 50), [0.0], np.logspace(-8, 8, 50)])
    r, dr = ratio_map(y)
    assert np.all(r > -3) and np.all(r < 1) and np.all(np.diff(r[np.argsort(y)]) >= 0)
    assert ratio_map(np.array([1.0]))[0][0] == 0.0
    h = 1e-6
    fd = (ratio_map(y + h)[0] - ratio_map(y - h)[0]) / (2 * h)
    assert np.allclose(fd, dr, rtol=1e-6, atol=1e-9)
    # value and slope continuous at 0
    eps = 1e-12
    assert abs(ratio_map(np.array([eps]))[0][0] - ratio_map(np.array([-eps]))[0][0]) < 1e-11
    assert abs(ratio_map(np.array([eps]))[1][0] - ratio_map(np.array([-eps]))[1][0]) < 1e-10


def test_fx_bound_map():
    b = FxBound(0.4, 1.5, 1.804)
    y = np.linspace(-50, 50, 200001)
    t, dt = b(y)
    assert np.all(t > 0) and np.all(t < 1.804) and np.all(np.diff(t) > 0)
    inside = (y >= 0.4) & (y <= 1.5)
    assert np.array_equal(t[inside], y[inside])
    assert b(np.array([1.0]))[0][0] == 1.0
    h = 1e-6
    fd = (b(y + h)[0] - b(y - h)[0]) / (2 * h)
    assert np.allclose(fd, dt, rtol=1e-6, atol=1e-8)
    # C^2 at the seams: second differences match on both sides
    for y0 in (0.4, 1.5):
        d2 = [(b(np.array([y0 + s * 2e-4 + 1e-4]))[1][0] - b(np.array([y0 + s * 2e-4 - 1e-4]))[1][0])
              / 2e-4 for s in (-1, 1)]
        assert abs(d2[0] - d2[1]) < 1e-2
    with pytest.raises(ValueError, match="lower < 1 < upper"):
        FxBound(0.4, 0.9, 1.804)
    with pytest.raises(ValueError):
        FxBound.fromdict({"lower": 0.4})


def test_tail_gate():
    gate = TailGate(0.9, 0.98)
    xp = np.linspace(0, 1, 100001)
    g, dg = gate(xp)
    assert np.all(g[xp <= 0.9] == 1.0) and np.all(g[xp >= 0.98] == 0.0)
    assert np.all(np.diff(g) <= 0)
    h = 1e-7
    fd = (gate(xp + h)[0] - gate(xp - h)[0]) / (2 * h)
    assert np.allclose(fd, dg, atol=1e-5)
    # C^2: the second derivative vanishes at both ends of the switch
    for x0 in (0.9, 0.98):
        assert abs(gate(np.array([x0 + 1e-6]))[1][0] - gate(np.array([x0 - 1e-6]))[1][0]) < 1e-6
    with pytest.raises(ValueError):
        TailGate(0.98, 0.9)


def test_valley_gate():
    """The x_g0 switch: 1 below valley_start, 0 above valley_end, dg/dx_g0 by
    finite differences, and it round-trips through todict()."""
    gate = TailGate(0.9, 0.98, valley_start=0.75, valley_end=0.9)
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (5, 4000))
    x[0] = rng.uniform(0, 1, 4000)
    g, dgp, dgv = gate.factor(x)
    assert np.all(g[(x[2] >= 0.9) | (x[0] >= 0.98)] == 0.0)
    assert np.all(g[(x[2] <= 0.75) & (x[0] <= 0.9)] == 1.0)
    h = 1e-7
    for i, d in ((0, dgp), (2, dgv)):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        assert np.allclose((gate.factor(xp)[0] - gate.factor(xm)[0]) / (2 * h), d, atol=1e-5)
    assert TailGate.fromdict(gate.todict()).todict() == gate.todict()
    assert TailGate.fromdict({"start": 0.9, "end": 0.98}).valley_start is None
    with pytest.raises(ValueError, match="both"):
        TailGate(0.9, 0.98, valley_start=0.7)
    with pytest.raises(ValueError):
        TailGate.fromdict({"start": 0.9, "end": 0.98, "code": "x"})


def test_shipped_default_is_pbe_in_density_valleys():
    """Vacuum between periodic images (p ~ 0, x_g0 -> 1, alpha noisy): the
    shipped default is PBE there, with no alpha dependence (no tau potential)."""
    fn = cider_xc.load()
    assert fn.gate is not None and fn.gate.valley_start is not None
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (5, 500))
    x[0] = rng.uniform(0, 0.3, 500)
    x[2] = rng.uniform(fn.gate.valley_end, 1.0, 500)
    p = x[0] / (1 - x[0])
    F, dF, _ = fn.enhancement(x, p)
    assert np.allclose(F, fn.bound(sl.pbe_enhancement(p)[0])[0], rtol=0, atol=1e-15)
    assert np.all(dF[1:] == 0)


def test_gated_model_is_pbe_in_the_far_tail(test_nl):
    """Beyond the gate F_x is PBE's (through the bound map), whatever alpha and G are."""
    fn = _bounded(test_nl)
    p = np.full(50, 200.0)                 # x_p = 0.995: far tail
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (5, 50))
    x[0] = p / (1 + p)
    F, dF, _ = fn.enhancement(x, p)
    assert np.allclose(F, fn.bound(sl.pbe_enhancement(p)[0])[0], rtol=0, atol=1e-15)
    assert np.all(dF[1:] == 0)


def _bounded(fn, eta=0.01):
    return CiderFunctional(dataclasses.replace(fn.settings, alpha_eta=eta), fn.fx,
                           fn.cider_x, fn.semilocal_xc, name="bounded", bound=FxBound(),
                           gate=TailGate())


def test_bounded_model_energy_density_derivatives(test_nl, rng):
    """Potentials of a bounded, alpha-regularised model against finite
    differences, with points in both saturated branches of the bound."""
    st = dataclasses.replace(test_nl.settings, alpha_eta=0.01)
    # scale up the untrained polynomial so F_x leaves [0.4, 1.5] often
    fx = type(test_nl.fx)(test_nl.fx.exponents, 8 * test_nl.fx.coefficients)
    # the valley switch on x_g0 in (-0.5, 0.2): many points inside it
    fn = CiderFunctional(st, fx, name="steep", bound=FxBound(),
                         gate=TailGate(0.5, 0.9, valley_start=-0.5, valley_end=0.2))
    n, s, t = _random_density(rng, 300)
    G = 10 ** rng.uniform(-1, 1, (3, n.size))
    x, jac = fn.chain.transform(n, s, t, G)
    raw = sl.pbe_enhancement(jac.p)[0] + fx(x)[0]
    assert (raw > fn.bound.upper).sum() > 10 and (raw < fn.bound.lower).sum() > 10
    assert ((x[2] > -0.5) & (x[2] < 0.2)).sum() > 30
    res = fn.exchange(n, s, t, G)
    F = res.exc / sl.lda_exchange(n)[0]
    assert np.all(F > 0) and np.all(F < 1.804)
    e = lambda **kw: fn.exchange(**{"n": n, "sigma": s, "tau": t, "G": G, **kw}).exc  # noqa
    _check_fd(lambda v: e(n=v), n, res.vrho)
    _check_fd(lambda v: e(sigma=v), s, res.vsigma)
    _check_fd(lambda v: e(tau=v), t, res.vtau)
    for i in range(3):
        def ei(v, i=i):
            Gx = G.copy()
            Gx[i] = v
            return e(G=Gx)
        _check_fd(ei, G[i], res.vG[i])


def test_bounded_model_uniform_gas_exact(test_nl):
    fn = _bounded(test_nl)
    n = np.array([1e-4, 0.01, 1.0, 37.0])
    tau0 = sl.CTAU * n ** (5 / 3)
    a, _ = fn.chain.exponents(n, 0 * n, tau0)
    G = n * (np.pi / a) ** 1.5
    res = fn.exchange(n, 0 * n, tau0, G)
    assert np.allclose(res.exc / sl.lda_exchange(n)[0], 1.0, rtol=1e-14, atol=0)


def test_shipped_default_stays_physical_over_the_box():
    """0 < F_x <= 1.804 (local Lieb-Oxford) everywhere in the descriptor box,
    and a bounded gradient, for the shipped default."""
    fn = cider_xc.load()
    assert fn.bound is not None and fn.bound.fmax <= 1.804
    assert fn.settings.alpha_eta > 0
    rng = fn.range_over_box(200000)
    assert 0 < rng["fx_min"] and rng["fx_max"] <= 1.804
    assert np.isfinite(rng["max_abs_dfx_dx"]) and rng["max_abs_dfx_dx"] < 50
    # the unbounded model before this release does leave the range
    old = cider_xc.load("cider-pbe0-v1").range_over_box(200000)
    assert old["fx_min"] < 0 or old["fx_max"] > 1.804
