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
