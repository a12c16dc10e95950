"""The user contract of the PySCF plugin: assignment, SCF, errors."""
import numpy as np
import pytest
from pyscf import dft, gto, scf

import cider_xc
from cider_xc.pyscf import hook
from cider_xc.pyscf.numint import CiderNumInt

MOLECULES = {
    "H2O": ("O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", 0),
    "CH4": ("C 0 0 0; H 0.629 0.629 0.629; H -0.629 -0.629 0.629; "
            "H -0.629 0.629 -0.629; H 0.629 -0.629 -0.629", 0),
    "N2": ("N 0 0 0; N 0 0 1.098", 0),
    "F2": ("F 0 0 0; F 0 0 1.412", 0),
    "O2": ("O 0 0 0; O 0 0 1.208", 2),
    "OH": ("O 0 0 0; H 0 0 0.971", 1),
}


@pytest.mark.parametrize("name", list(MOLECULES))
def test_scf_converges(name):
    atom, spin = MOLECULES[name]
    mol = gto.M(atom=atom, basis="def2-svp", spin=spin, verbose=0)
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.grids.level = 2
    mf.xc = cider_xc.load("test-nl")
    e = mf.kernel()
    assert mf.converged
    assert isinstance(mf._numint, CiderNumInt)
    # same composition without the ML part would be PBE0-like: the energy must
    # differ from PBE (the CIDER term is really applied) but stay close
    mf2 = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf2.grids.level = 2
    mf2.xc = "PBE"
    e2 = mf2.kernel()
    assert 1e-4 < abs(e - e2) < 0.5


def test_density_fit_and_get_veff_exc(water_sto3g):
    fn = cider_xc.load("test-nl")
    mf = dft.RKS(water_sto3g).density_fit()
    mf.grids.level = 2
    mf.xc = fn
    e = mf.kernel()
    assert mf.converged
    dm = mf.make_rdm1()
    vhf = mf.get_veff(water_sto3g, dm)
    n, exc, _ = mf._numint.nr_rks(water_sto3g, mf.grids, fn, dm)
    assert abs(vhf.exc - exc) < 1e-12
    assert abs(mf.energy_tot(dm) - e) < 1e-8
    # UKS with density fitting
    mfu = dft.UKS(water_sto3g).density_fit()
    mfu.grids.level = 2
    mfu.xc = fn
    assert abs(mfu.kernel() - e) < 1e-6


def test_assignment_at_construction_and_back_to_string(water_sto3g):
    fn = cider_xc.load("test-nl")
    mf = dft.RKS(water_sto3g, xc=fn)
    assert isinstance(mf._numint, CiderNumInt)
    mf.xc = "PBE"
    assert type(mf._numint) is dft.numint.NumInt


def test_string_xc_is_bit_identical(water_sto3g):
    """With a string xc the package changes nothing (PySCF is only
    bit-reproducible single-threaded, so the runs use one thread)."""
    from pyscf import lib

    def run():
        with lib.with_omp_threads(1):
            mf = dft.RKS(water_sto3g)
            mf.xc = "PBE0"
            mf.grids.level = 2
            return mf.kernel()
    hook.uninstall()
    try:
        assert not hook.installed()
        e0 = run()
    finally:
        hook.install()
    assert hook.installed()
    e1 = run()
    assert e0 == e1
    with lib.with_omp_threads(1):
        mf = dft.RKS(water_sto3g)
        mf.xc = cider_xc.load("test-nl")
        mf.xc = "PBE0"
        mf.grids.level = 2
        assert mf.kernel() == e0


def test_exchange_only_and_overrides(water_sto3g):
    fn = cider_xc.load("test-nl")
    assert fn.cider_x == 0.25 and "GGA_C_PBE" in fn.semilocal_xc
    fx = cider_xc.load("test-nl", exchange_only=True)
    assert fx.cider_x == 1.0 and fx.semilocal_xc is None
    fo = cider_xc.load("test-nl", cider_x=0.5, semilocal_xc="0.5*GGA_X_PBE, GGA_C_PBE")
    assert fo.cider_x == 0.5
    with pytest.raises(ValueError, match="exchange_only"):
        cider_xc.load("test-nl", exchange_only=True, cider_x=0.3)
    # composition is linear: E(0.25 CIDER + 0.75 PBE_x + PBE_c) from the parts
    from conftest import pbe_dm
    dm = pbe_dm(water_sto3g)

    def exc(xc):
        mf = dft.RKS(water_sto3g)
        mf.grids.level = 2
        mf.xc = xc
        return mf.get_veff(water_sto3g, dm).exc
    e_full = exc(fn)
    e_parts = 0.25 * exc(fx) + exc(".75*GGA_X_PBE, GGA_C_PBE")
    assert abs(e_full - e_parts) < 1e-10


def test_dump_flags_and_timings_logged(water_sto3g, capsys):
    mol = water_sto3g.copy()
    mol.verbose = 4
    mol.stdout = __import__("sys").stdout
    mf = dft.RKS(mol)
    mf.grids.level = 1
    mf.max_cycle = 2
    mf.xc = cider_xc.load("test-nl")
    mf.kernel()
    out = capsys.readouterr().out
    assert "XC functionals = 0.25*CIDER_X[test-nl]" in out
    assert "descriptors" in out and "nonlocal potential" in out


@pytest.mark.parametrize("what", ["tddft", "hessian", "stability"])
def test_unsupported_properties_raise(water_sto3g, what):
    mf = dft.RKS(water_sto3g)
    mf.grids.level = 1
    mf.xc = cider_xc.load("test-nl")
    mf.kernel()
    with pytest.raises(NotImplementedError, match="not implemented for CIDER"):
        if what == "tddft":
            from pyscf import tddft
            tddft.TDDFT(mf).kernel()
        elif what == "hessian":
            mf.Hessian().kernel()
        else:
            mf.stability()


def test_density_fit_after_cider_xc(water_sto3g):
    """mf.density_fit() after mf.xc = <CIDER> picks PySCF's auxiliary basis
    for a pure functional (libxc's parser cannot read a CIDER functional)."""
    mol = water_sto3g.copy()
    mol.basis = "def2-svp"
    mol.build()
    mf = dft.RKS(mol)
    mf.xc = cider_xc.load()
    mf.grids.level = 1
    mf = mf.density_fit()
    ref = dft.RKS(mol)
    ref.xc = "PBE"
    assert mf.with_df.auxbasis == ref.density_fit().with_df.auxbasis
    assert mf.kernel() < -70 and mf.converged


def test_unsupported_methods_raise(water_sto3g):
    fn = cider_xc.load("test-nl")
    with pytest.raises(NotImplementedError, match="GKS"):
        dft.GKS(water_sto3g).xc = fn
    from pyscf.pbc import dft as pbcdft, gto as pbcgto
    cell = pbcgto.M(atom="He 0 0 0", basis="gth-szv", pseudo="gth-pade", a=np.eye(3) * 4,
                    verbose=0)
    with pytest.raises(NotImplementedError, match="pyscf.pbc"):
        pbcdft.RKS(cell).xc = fn


def test_nan_and_negative_density_raise(water_sto3g):
    mf = dft.RKS(water_sto3g)
    mf.grids.level = 1
    mf.xc = cider_xc.load("test-nl")
    dm = mf.get_init_guess()
    bad = dm.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mf.get_veff(water_sto3g, bad)
    with pytest.raises(ValueError, match="negative density"):
        mf.get_veff(water_sto3g, -dm)


def test_hartree_fock_untouched(water_sto3g):
    """HF objects are not Kohn-Sham: the hook does not apply to them."""
    mf = scf.RHF(water_sto3g)
    assert not hasattr(type(mf), "_numint") or not isinstance(
        getattr(type(mf), "_numint", None), hook._NumIntAttribute)


def test_fallback_kernel(water_sto3g):
    """If DIIS does not converge (here: forced by max_cycle=1), the fallback
    restarts with ADIIS from the PBE density and converges; the CIDER functional
    stays in place."""
    from cider_xc.pyscf import fallback
    fn = cider_xc.load()
    mf = dft.RKS(water_sto3g)
    mf.grids.level = 1
    mf.xc = fn
    mf.max_cycle = 1
    e, used = fallback.kernel(mf)
    assert used and mf.converged and mf.xc is fn
    ref = dft.RKS(water_sto3g)
    ref.grids.level = 1
    ref.xc = fn
    e_ref, used_ref = fallback.kernel(ref)
    assert not used_ref and abs(e - e_ref) < 1e-7
