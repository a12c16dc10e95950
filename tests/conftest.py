import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def test_nl():
    import cider_xc
    return cider_xc.load("test-nl")


@pytest.fixture(scope="session")
def water_sto3g():
    from pyscf import gto
    return gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="sto-3g",
                 verbose=0)


def converged_dm(mol, xc, unrestricted=False):
    """Density matrix of a quick (grid level 2) SCF with a string functional."""
    from pyscf import dft
    mf = (dft.UKS if unrestricted else dft.RKS)(mol)
    mf.xc = xc
    mf.grids.level = 2
    mf.verbose = 0
    mf.kernel()
    return mf.make_rdm1()


def pbe_dm(mol, unrestricted=False):
    return converged_dm(mol, "PBE", unrestricted)


def lda_dm(mol, unrestricted=False):
    return converged_dm(mol, "LDA,VWN", unrestricted)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
