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


@pytest.fixture(scope="module")
def gset_compact():
    """Spatially compact point blocks (a PySCF-like ordering: consecutive
    points close together) around a cluster of 4 waters, with exponents of
    3 to 30: inside a kept (block, group) pair the compact shells (whose
    convolutions reach sqrt(cutoff / a) at most) are below exp(-cutoff) on
    the whole block and are skipped, the diffuse ones are not."""
    mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59; O 3 0 0; H 3.7 0.2 0.5;"
                     "H 2.5 -0.8 0.4; O 0 3 0; H 0 3.76 0.59; H 0 2.24 0.59;"
                     "O 3 3 3; H 3.7 3.2 3.5; H 2.5 2.2 3.4", basis="def2-svp", verbose=0)
    proj = DensityProjector(mol)
    rng = np.random.default_rng(5)
    N = 6000
    pts = rng.uniform(-8, 14, size=(N, 3))
    cell = np.floor(pts / 3.0).astype(int)
    order = np.lexsort((cell[:, 2], cell[:, 1], cell[:, 0]))
    pts = pts[order]
    a = np.sort(10 ** rng.uniform(0.5, 1.5, size=(3, N)), axis=0)
    c = rng.normal(size=proj.naux)
    u = rng.normal(size=a.shape)
    return proj.gaussians, pts, a, c, u


def test_shell_skip_is_exact(gset_compact):
    """The per-(shell, feature) skip inside a (block, group) pair changes no
    sum: all four kernels against the reference, on blocks where it acts."""
    gs, pts, a, c, u = gset_compact
    # the skip acts: count the (block, shell, feature) triples it removes
    ptr, idx = gs.screen(pts, a)
    bt = conv._block_bounds(pts, a)
    skipped = 0
    for b in range(len(ptr) - 1):
        for ig in idx[ptr[b]:ptr[b + 1]]:
            R = gs.centers[gs.groups[ig]]
            dc = max(np.linalg.norm(R - bt[b, :3]) - bt[b, 3], 0.0)
            for s in range(gs.groups[ig], gs.groups[ig + 1]):
                z = gs.zeta[s]
                am = bt[b, 4:]
                skipped += int(np.sum(z * am / (z + am) * dc * dc > conv.EXP_CUTOFF))
    assert skipped > 1000
    G, dG = gs.convolve(pts, a, c)
    Gr, dGr = ref.convolve(gs, pts, a, c)
    assert _close(G, Gr) and _close(dG, dGr)
    assert _close(gs.convolve_adjoint(pts, a, u), ref.convolve_adjoint(gs, pts, a, u))
    assert _close(gs.center_gradient(pts, a, u, c), ref.center_gradient(gs, pts, a, u, c))
    assert _close(gs.point_gradient(pts, a, u, c), ref.point_gradient(gs, pts, a, u, c))
