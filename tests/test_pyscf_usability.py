"""What a PySCF user expects beyond the basic contract (issue 22): copies of
finished calculations, string names, hybrid semilocal parts, X2C and
symmetry-adapted Kohn-Sham."""
import copy

import numpy as np
import pytest
from pyscf import dft, gto, lib

import cider_xc
from cider_xc.pyscf.numint import CiderNumInt


def test_deepcopy_of_finished_calculation(water_sto3g):
    mf = dft.RKS(water_sto3g)
    mf.grids.level = 1
    mf.xc = cider_xc.load("test-nl")
    e = mf.kernel()
    mf2 = copy.deepcopy(mf)
    assert isinstance(mf2._numint, CiderNumInt)
    assert mf2.xc is not mf.xc and mf2._numint.functional is mf2.xc
    assert mf2._numint.libxc.is_hybrid_xc("PBE0")
    assert abs(mf2.energy_tot(mf.make_rdm1()) - e) < 1e-10
    # the shallow copy PySCF itself makes (mf.copy()) keeps working too
    assert abs(mf.copy().energy_tot(mf.make_rdm1()) - e) < 1e-10
