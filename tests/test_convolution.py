"""The fast convolution kernels (one screening loop, vectorised over the
points of a block) against the scalar reference kernels they replaced."""
import numpy as np
import pytest
from pyscf import gto

from cider_xc.descriptors import convolution as conv
from cider_xc.descriptors import convolution_ref as ref
from cider_xc.pyscf.dfaux import DensityProjector


@pytest.fixture(scope="module")
def gset_pts():
    mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59; O 3 0 0; H 3.7 0.2 0.5;"
                     "H 2.5 -0.8 0.4", basis="def2-svp", verbose=0)
    proj = DensityProjector(mol)
    rng = np.random.default_rng(3)
    N = 3000     # not a multiple of the block size
    pts = rng.normal(size=(N, 3)) * 4.0 + np.array([1.5, 0.0, 0.0])
    # exponents from 1e-4 (tails: every shell in range) to 30 (near nuclei)
    a = np.sort(10 ** rng.uniform(-4, 1.5, size=(3, N)), axis=0)
    c = rng.normal(size=proj.naux)
    u = rng.normal(size=a.shape)
    return proj.gaussians, pts, a, c, u


def _close(x, y, tol=1e-12):
    return np.abs(x - y).max() <= tol * np.abs(y).max()


def test_forward_matches_reference(gset_pts):
    gs, pts, a, c, _ = gset_pts
    G, dG = gs.convolve(pts, a, c)
    Gr, dGr = ref.convolve(gs, pts, a, c)
    assert _close(G, Gr) and _close(dG, dGr)


def test_adjoint_matches_reference(gset_pts):
    gs, pts, a, _, u = gset_pts
    assert _close(gs.convolve_adjoint(pts, a, u), ref.convolve_adjoint(gs, pts, a, u))


def test_gradients_match_reference(gset_pts):
    gs, pts, a, c, u = gset_pts
    assert _close(gs.center_gradient(pts, a, u, c), ref.center_gradient(gs, pts, a, u, c))
    assert _close(gs.point_gradient(pts, a, u, c), ref.point_gradient(gs, pts, a, u, c))


def test_fast_exp():
    x = -np.linspace(0.0, 50.0, 200001)
    y = np.array([conv._exp_neg(v) for v in x[::97]])
    assert np.abs(y / np.exp(x[::97]) - 1).max() < 5e-16


def test_screening_keeps_every_live_term(gset_pts):
    """No (point, group) pair with a term above exp(-cutoff) is screened out."""
    gs, pts, a, _, _ = gset_pts
    ptr, idx = gs.screen(pts, a)
    B = conv.BLOCK
    amin = a.min(axis=0)
    for b in range(len(ptr) - 1):
        kept = set(idx[ptr[b]:ptr[b + 1]].tolist())
        sl = slice(b * B, min(len(pts), (b + 1) * B))
        for ig in range(len(gs.groups) - 1):
            if ig in kept:
                continue
            z = gs.group_zmin[ig]
            d2 = ((pts[sl] - gs.centers[gs.groups[ig]]) ** 2).sum(axis=1)
            assert np.all(z * amin[sl] / (z + amin[sl]) * d2 > conv.EXP_CUTOFF)
