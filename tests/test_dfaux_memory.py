"""The density projector within max_memory: three-centre integrals built in
blocks of auxiliary shells, in memory or (when they do not fit) in a
temporary HDF5 file, with the same fit, potential and SCF energy."""
import numpy as np
import pytest
from pyscf import df, dft, gto

import cider_xc
from cider_xc.pyscf.dfaux import DensityProjector

MOL = "O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59; O 3 0 0; H 3.7 0.2 0.5; H 2.5 -0.8 0.4"


@pytest.fixture(scope="module")
def water2():
    return gto.M(atom=MOL, basis="def2-svp", verbose=0)


def test_blocked_build_matches_one_shot(water2):
    proj = DensityProjector(water2)
    assert proj.incore
    full = df.incore.aux_e2(water2, proj.auxmol, "int3c2e", aosym="s2ij").T
    assert np.abs(proj._j3c - full).max() <= 1e-14 * np.abs(full).max()


def test_outcore_same_fit_and_potential(water2):
    inc = DensityProjector(water2)
    out = DensityProjector(water2, max_memory=1)     # 1 MB: nothing fits
    assert not out.incore
    assert len(list(out._aux_blocks(out._blk))) > 1   # read back in blocks
    rng = np.random.default_rng(0)
    dm = rng.normal(size=(water2.nao, water2.nao))
    dm = dm + dm.T
    dmt = np.random.default_rng(1).normal(size=water2.nao * (water2.nao + 1) // 2)
    b0, b1 = inc.contract_j3c(dmt), out.contract_j3c(dmt)
    assert np.abs(b0 - b1).max() <= 1e-14 * np.abs(b0).max()
    # the metric solve (eigenvalues down to 1e-12 of the largest) amplifies
    # the different rounding of the blocked products
    c0, c1 = inc.coefficients(dm), out.coefficients(dm)
    assert np.abs(c0 - c1).max() <= 1e-9 * np.abs(c0).max()
    v = rng.normal(size=inc.naux)
    v0, v1 = inc.potential(v), out.potential(v)     # (J^+ v large: cancellation)
    assert np.abs(v0 - v1).max() <= 1e-10 * np.abs(v0).max()


def test_outcore_scf_energy(water2):
    """The SCF energy with the integrals on disk (mol.max_memory too small)
    equals the in-memory one to 1e-10 Hartree."""
    es = []
    for mem in (4000, 1):
        mol = water2.copy()
        mol.max_memory = mem
        mf = dft.RKS(mol).density_fit()
        mf.xc = cider_xc.load()
        mf.conv_tol = 1e-11
        es.append(mf.kernel())
        assert mf._numint.projector(mol).incore == (mem == 4000)
    assert abs(es[0] - es[1]) < 1e-10


def test_features_from_orbitals_match_density_matrix():
    """spin_channel_features with PySCF's tagged make_rdm1() (grid density from
    the occupied orbitals) gives the descriptors of the plain density matrix."""
    import numpy as np
    from cider_xc.pyscf.features import spin_channel_features
    for atom, spin in ((MOL, 0), ("O 0 0 0; H 0 0 0.97", 1)):
        mol = gto.M(atom=atom, basis="def2-svp", spin=spin, verbose=0)
        mf = (dft.UKS if spin else dft.RKS)(mol)
        mf.xc = "pbe"
        mf.grids.level = 1
        mf.kernel()
        dm = mf.make_rdm1()
        assert getattr(dm, "mo_coeff", None) is not None
        fn = cider_xc.load()
        a = spin_channel_features(mol, mf.grids, dm, fn.settings)
        b = spin_channel_features(mol, mf.grids, np.asarray(dm), fn.settings)
        for ca, cb in zip(a, b):
            for k in ("x", "we", "rho"):
                assert np.abs(ca[k] - cb[k]).max() <= 1e-10 * max(1.0, np.abs(cb[k]).max())
