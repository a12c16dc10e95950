"""FFT features of periodic densities (descriptors/periodic.py).

* fast (interpolated) vs the direct per-point reciprocal sum of the same
  definition;
* the periodic features of a molecule-like density in a big box equal the
  molecular definition (closed-form Gaussian convolution) at the points
  that carry density: one descriptor definition for both codes;
* exact dG/da and an exact adjoint.
"""
import numpy as np
import pytest

from cider_xc.descriptors.periodic import (PeriodicGaussianConvolver,
                                           periodic_features_reference)

BLOBS = [((0.3, 0.3, 0.3), 1.5, 4.0), ((0.7, 0.6, 0.5), 0.8, 2.0)]


def _grid(cell, N):
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in N], indexing="ij"), -1)
    return frac @ cell


def _blob_density(cell, N, blobs, images=1, background=1e-3):
    r = _grid(cell, N)
    n = np.full(N, background)
    rng = range(-images, images + 1)
    shifts = np.array([(i, j, k) for i in rng for j in rng for k in rng]) @ cell
    for c, z, q in blobs:
        R = np.array(c) @ cell
        for sh in shifts:
            n += q * (z / np.pi) ** 1.5 * np.exp(-z * ((r - R - sh) ** 2).sum(-1))
    return n


def _exponents(n, mults=(0.5, 1.0, 2.0)):
    return np.stack([m * np.pi * (n / 2) ** (2 / 3) for m in mults])


def _x(G, mults=(0.5, 1.0, 2.0)):
    g = G * (np.array(mults)[:, None, None, None]) ** 1.5 / 2
    return (g - 1) / (g + 1)


@pytest.fixture(scope="module")
def skewed():
    cell = np.diag([5.6, 6.0, 5.2])
    cell[1, 0] = 0.7
    N = (14, 15, 13)
    n = _blob_density(cell, N, BLOBS)
    a = _exponents(n)
    return cell, N, n, a, periodic_features_reference(n, cell, a)


@pytest.mark.parametrize("ratio,tol", [(1.3, 2e-4), (1.5, 1e-3)])
def test_fast_matches_direct_sum(skewed, ratio, tol):
    cell, N, n, a, ref = skewed
    conv = PeriodicGaussianConvolver(cell, N, ratio)
    G, _, _ = conv.forward(n, a)
    err = np.abs(_x(G) - _x(ref)).max()
    assert err < tol, err
    # and the error really comes from the exponent interpolation: it shrinks
    G2, _, _ = PeriodicGaussianConvolver(cell, N, ratio ** 0.5).forward(n, a)
    assert np.abs(_x(G2) - _x(ref)).max() < err / 4


def test_exponent_derivative_and_adjoint(skewed):
    cell, N, n, a, _ = skewed
    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    G, dG, state = conv.forward(n, a)
    h = 1e-5
    fd = (conv.forward(n, a * (1 + h))[0] - conv.forward(n, a * (1 - h))[0]) / (2 * h * a)
    assert np.abs(fd - dG).max() < 1e-7 * np.abs(dG).max()
    rng = np.random.default_rng(3)
    v = rng.standard_normal(a.shape)
    dn = rng.standard_normal(N)
    lhs = (v * conv.forward(dn, a)[0]).sum()
    rhs = (conv.adjoint(v, state) * dn).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_periodic_equals_molecular_definition():
    """Isolated Gaussian 'molecule' in a big box: the FFT features equal
    the closed-form molecular convolution wherever the density matters."""
    L, N = 20.0, (60, 60, 60)     # big enough that periodic images do not matter
    cell = np.eye(3) * L
    blobs = [((0.45, 0.5, 0.5), 2.0, 3.0), ((0.56, 0.52, 0.5), 0.7, 2.0)]
    n = _blob_density(cell, N, blobs, images=0, background=0.0)
    a = _exponents(np.maximum(n, 1e-2))       # exponents >= those of n = 0.01
    G, _, _ = PeriodicGaussianConvolver(cell, N, 1.3).forward(n, a)
    r = _grid(cell, N)
    exact = np.zeros_like(G)
    for c, z, q in blobs:
        d2 = ((r - np.array(c) @ cell) ** 2).sum(-1)
        for i in range(len(a)):
            exact[i] += q * (z / (z + a[i])) ** 1.5 * np.exp(-z * a[i] / (z + a[i]) * d2)
    mask = n > 1e-3
    err = np.abs(_x(G) - _x(exact))[:, mask].max()
    assert err < 2e-4, err


def test_bad_input():
    conv = PeriodicGaussianConvolver(np.eye(3) * 5, (8, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        conv.forward(np.ones((8, 8, 9)), np.ones((1, 8, 8, 9)))
    with pytest.raises(ValueError, match="positive"):
        conv.forward(np.ones((8, 8, 8)), np.zeros((1, 8, 8, 8)))
    with pytest.raises(ValueError, match="ratio"):
        PeriodicGaussianConvolver(np.eye(3) * 5, (8, 8, 8), ratio=1.0)


def test_uniform_gas_gives_zero_features():
    """A uniform density: every transformed nonlocal feature is exactly the
    uniform-gas value 0 (G = n (pi/a)^{3/2}), whatever the exponent."""
    cell = np.diag([4.0, 5.0, 4.5])
    N = (10, 12, 11)
    n = np.full(N, 0.37)
    a = _exponents(n)
    G, _, _ = PeriodicGaussianConvolver(cell, N, 1.3).forward(n, a)
    assert np.abs(_x(G)).max() < 1e-12


def test_strain_derivative_matches_finite_strain(skewed):
    """d/d eps of E = dv sum_r f(G(r)) under a homogeneous strain (density
    carried along, n -> n/det; exponents and grid indices fixed) equals
    delta E + strain_derivative(n, f'(G)).  Off-diagonal and diagonal
    components, a skewed cell; the exponent lattice is not moved."""
    cell, N, n, a, _ = skewed
    rng = np.random.default_rng(7)
    c = rng.uniform(0.5, 1.5, size=len(a))

    def energy(eps):
        st = np.eye(3) + eps
        cell2 = cell @ st.T        # rows are cell vectors: r -> (1 + eps) r
        conv = PeriodicGaussianConvolver(cell2, N, 1.3)
        G, _, _ = conv.forward(n / np.linalg.det(st), a)
        return conv.dv * (c[:, None, None, None] * np.sqrt(G)).sum()

    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    G, _, state = conv.forward(n, a)
    vG = c[:, None, None, None] * 0.5 / np.sqrt(G)
    E0 = energy(np.zeros((3, 3)))
    ana = np.eye(3) * E0 + conv.strain_derivative(n, vG, state)
    h = 1e-5
    fd = np.zeros((3, 3))
    for v in range(3):
        for w in range(3):
            e = np.zeros((3, 3))
            e[v, w] = h
            fd[v, w] = (energy(e) - energy(-e)) / (2 * h)
    # strain_derivative is symmetric; FD of a non-symmetric eps_vw agrees with it
    assert np.abs(fd - ana).max() < 1e-7 * np.abs(ana).max(), (fd, ana)
    # the Fourier-space term matters (dropping it is a large error)
    assert np.abs(fd - np.eye(3) * E0).max() > 1e-2 * np.abs(ana).max()


def _direct_at_points(n_g, cell, r_p, a_p):
    """G at Cartesian points r_p (M, 3) with exponents a_p (M,): the
    reciprocal-space sum of the definition, no interpolation."""
    N = n_g.shape
    nG = np.fft.fftn(n_g) / n_g.size
    rcell = 2.0 * np.pi * np.linalg.inv(cell).T
    I = np.stack(np.meshgrid(*[np.fft.fftfreq(k, 1.0 / k) for k in N], indexing="ij"),
                 -1).reshape(-1, 3)
    Gv = I @ rcell
    g2 = (Gv ** 2).sum(-1)
    phase = np.exp(1j * r_p @ Gv.T)
    filt = np.exp(-g2[None, :] / (4.0 * a_p[:, None]))
    return (np.pi / a_p) ** 1.5 * np.real((phase * filt * nG.reshape(-1)[None]).sum(1))


def test_off_grid_points(skewed):
    """Features at off-grid points (the PAW radial grids): tricubic B-spline
    interpolation of the FFT lattice vs the direct reciprocal sum at the
    same points; dG/da; and the point sources in the adjoint."""
    from cider_xc.descriptors.periodic import PointSet
    cell, N, n, a, _ = skewed
    rng = np.random.default_rng(11)
    M = 40
    frac = rng.uniform(-0.2, 1.2, size=(M, 3))          # also outside the cell
    r_p = frac @ cell
    a_pe = np.stack([rng.uniform(0.3, 3.0, M), rng.uniform(5.0, 60.0, M)], axis=1)
    pts = PointSet(frac * np.array(N), a_pe)
    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    G, dG, state, Gp, dGp = conv.forward(n, a, points=pts)
    # the grid part is unchanged by the presence of points
    assert np.array_equal(G, conv.forward(n, a)[0])
    ref = np.stack([_direct_at_points(n, cell, r_p, a_pe[:, e]) for e in range(2)], axis=1)
    rel = np.abs(Gp - ref) / np.abs(ref).max(axis=0)
    assert rel.max() < 3e-3, rel.max()                   # coarse 14^3 grid
    # the same density on a grid of half the spacing
    N2 = tuple(2 * k for k in N)
    n2 = _blob_density(cell, N2, BLOBS)
    conv2 = PeriodicGaussianConvolver(cell, N2, 1.3)
    Gp2 = conv2.forward(n2, _exponents(n2), points=PointSet(frac * np.array(N2), a_pe))[3]
    ref2 = np.stack([_direct_at_points(n2, cell, r_p, a_pe[:, e]) for e in range(2)], axis=1)
    rel2 = np.abs(Gp2 - ref2) / np.abs(ref2).max(axis=0)
    assert rel2.max() < 2e-4, rel2.max()
    # the interpolation error is O(h^4): halving h cuts it by more than 8
    assert (rel2.max(axis=0) < rel.max(axis=0) / 8).all()
    # exponent derivative at the points
    h = 1e-5
    up = conv.forward(n, a, points=PointSet(pts.xp, a_pe * (1 + h)))[3]
    dn_ = conv.forward(n, a, points=PointSet(pts.xp, a_pe * (1 - h)))[3]
    assert np.abs((up - dn_) / (2 * h * a_pe) - dGp).max() < 1e-6 * np.abs(dGp).max()
    # adjoint with grid and point sources: <v, G[dn]> + <vp, Gp[dn]> = <adj, dn> dv
    v = rng.standard_normal(a.shape)
    vp = rng.standard_normal(a_pe.shape)
    dn = rng.standard_normal(N)
    _, _, _, Gp_dn, _ = conv.forward(dn, a, points=pts)
    lhs = conv.dv * (v * conv.forward(dn, a)[0]).sum() + (vp * Gp_dn).sum()
    rhs = conv.dv * (conv.adjoint(v, state, vGp=vp) * dn).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    with pytest.raises(ValueError, match="positive"):
        PointSet(pts.xp, -a_pe)


def test_lattice_points(skewed):
    """PointSet(lattice=k): the entries are the interpolated lattice values
    D_k themselves, equal to the exponent-mode features at a = b_k divided
    by (pi/b_k)^{3/2}; the adjoint with lattice-entry sources is the
    transpose; exponents and lattice indices together are refused."""
    from cider_xc.descriptors.periodic import PointSet
    cell, N, n, a, _ = skewed
    rng = np.random.default_rng(5)
    M = 30
    xp = rng.uniform(-0.2, 1.2, size=(M, 3)) * np.array(N)
    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    k = rng.integers(-4, 8, size=(M, 1)) + np.arange(5)[None, :]
    G, dG, state, Dp, none = conv.forward(n, a, points=PointSet(xp, lattice=k))
    assert none is None
    b = conv.exponent(k)
    Gp = conv.forward(n, a, points=PointSet(xp, b))[3]
    assert np.abs(Gp / (np.pi / b) ** 1.5 - Dp).max() < 1e-10 * np.abs(Dp).max()
    v = rng.standard_normal(a.shape)
    vp = rng.standard_normal(k.shape)
    dn = rng.standard_normal(N)
    D_dn = conv.forward(dn, a, points=PointSet(xp, lattice=k))[3]
    lhs = conv.dv * (v * conv.forward(dn, a)[0]).sum() + (vp * D_dn).sum()
    rhs = conv.dv * (conv.adjoint(v, state, vGp=vp) * dn).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    with pytest.raises(ValueError, match="either"):
        PointSet(xp, b, lattice=k)


def test_point_position_gradient(skewed):
    """point_gradient = d/dx_p of sum vGp G_p (exponents fixed) against
    finite differences of the point positions."""
    from cider_xc.descriptors.periodic import PointSet
    cell, N, n, a, _ = skewed
    rng = np.random.default_rng(2)
    M = 12
    xp = rng.uniform(0, 1, size=(M, 3)) * np.array(N)
    a_pe = np.stack([rng.uniform(0.3, 3.0, M), rng.uniform(5.0, 60.0, M)], axis=1)
    vp = rng.standard_normal(a_pe.shape)
    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    _, _, state, Gp, _ = conv.forward(n, a, points=PointSet(xp, a_pe))
    grad = conv.point_gradient(n, vp, state)
    h = 1e-4
    for c in range(3):
        d = np.zeros(3)
        d[c] = h
        up = conv.forward(n, a, points=PointSet(xp + d, a_pe))[3]
        dn = conv.forward(n, a, points=PointSet(xp - d, a_pe))[3]
        fd = ((up - dn) / (2 * h) * vp).sum(1)
        assert np.abs(fd - grad[:, c]).max() < 1e-6 * np.abs(grad).max(), c


def test_strain_derivative_with_points(skewed):
    """Point entries carried along with the cell (fixed grid-index
    coordinates): E = sum_p c_p sqrt(G_p) under a homogeneous strain
    against strain_derivative with the point sources."""
    from cider_xc.descriptors.periodic import PointSet
    cell, N, n, a, _ = skewed
    rng = np.random.default_rng(9)
    M = 10
    pts = PointSet(rng.uniform(0, 1, size=(M, 3)) * np.array(N),
                   np.stack([rng.uniform(0.3, 3.0, M), rng.uniform(5.0, 60.0, M)], axis=1))
    c = rng.uniform(0.5, 1.5, size=pts.a.shape)

    def energy(eps):
        st = np.eye(3) + eps
        conv = PeriodicGaussianConvolver(cell @ st.T, N, 1.3)
        Gp = conv.forward(n / np.linalg.det(st), a, points=pts)[3]
        return (c * np.sqrt(Gp)).sum()

    conv = PeriodicGaussianConvolver(cell, N, 1.3)
    _, _, state, Gp, _ = conv.forward(n, a, points=pts)
    ana = conv.strain_derivative(n, np.zeros(a.shape), state, vGp=c * 0.5 / np.sqrt(Gp))
    h = 1e-5
    for v, w in [(0, 0), (1, 2), (2, 2)]:
        e = np.zeros((3, 3))
        e[v, w] = e[w, v] = h / 2 if v != w else h
        fd = (energy(e) - energy(-e)) / (2 * h)
        sym = 0.5 * (ana[v, w] + ana[w, v])
        assert abs(fd - sym) < 1e-7 * np.abs(ana).max(), (v, w, fd, sym)
