"""Guard rails (issue 22): the training path and the SCF plugin compute the
same exchange energy for the same density."""
import numpy as np
import pytest
from pyscf import dft, gto

import cider_xc
from cider_xc.pyscf.features import spin_channel_features
from cider_xc.training import fit, reference, systems

SYSTEMS = {"H2O": ("O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", 0),
           "OH": ("O 0 0 0; H 0 0 0.971", 1)}


def _plugin_ex(mol, grids, dm, fn):
    mf = (dft.UKS if mol.spin else dft.RKS)(mol)
    mf.grids = grids
    mf.xc = fn.with_composition(exchange_only=True)
    return mf.get_veff(mol, dm).exc


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_training_features_times_fx_equal_plugin_exchange(name):
    """sum_g w_e F_x(x) (F_x = T(F_x^PBE + g f_ML), as the model forms it) from
    the per-point training features is the plugin's E_x^CIDER of the same
    density matrix on the same grid."""
    atom, spin = SYSTEMS[name]
    mol = gto.M(atom=atom, basis="6-31g", spin=spin, verbose=0)
    mf = (dft.UKS if spin else dft.RKS)(mol)
    mf.xc = "PBE0"
    mf.grids.level = 2
    mf.kernel()
    dm = mf.make_rdm1()
    fn = cider_xc.load()
    chans = spin_channel_features(mol, mf.grids, dm, fn.settings, min_weight=0.0)
    assert fn.bound is not None and fn.gate is not None      # the shipped form
    e_train = sum(float(c["we"] @ fn.enhancement(c["x"], fpbe=c["fpbe"])[0]) for c in chans)
    e_plugin = _plugin_ex(mol, mf.grids, dm, fn)
    assert abs(e_train - e_plugin) < 1e-11 * abs(e_plugin), (e_train, e_plugin)
    # the PBE part alone is PBE exchange (libxc) on the same grid
    e_pbe = sum(float(c["we"] @ c["fpbe"]) for c in chans)
    mfx = (dft.UKS if spin else dft.RKS)(mol)
    mfx.grids = mf.grids
    mfx.xc = "GGA_X_PBE,"
    assert abs(e_pbe - mfx.get_veff(mol, dm).exc) < 1e-9 * abs(e_pbe)


def test_reference_data_exchange_equals_plugin(tmp_path):
    """The whole training path: reference.compute's stored features, through
    fit.evaluate_exchange, give the plugin's E_x on the reference density."""
    ref = reference.ReferenceSettings(basis="6-31g", grid_level=2, density_fit=False,
                                      conv_tol=1e-10, min_weight=0.0)
    fn = cider_xc.load()
    xyz = tmp_path / "OH.xyz"
    xyz.write_text("2\n\nO 0 0 0\nH 0 0 0.971\n")
    (sysm,) = systems.resolve([str(xyz)])
    # one thread: the two SCFs below must be bit-identical (with threaded
    # sums they differ at 1e-10 in the density, about 1e-10 relative in E_x)
    from pyscf import lib
    with lib.with_omp_threads(1):
        attrs, arrays = reference.compute(sysm, fn.settings, ref)
    e_train = fit.evaluate_exchange(fn, {"OH": (attrs, arrays)})["systems"]["OH"]["cider"]
    # the same SCF again, for its density matrix and grid
    mol = sysm.to_mol(ref.basis)
    mf = dft.UKS(mol)
    mf.xc = ref.xc
    mf.grids.level = ref.grid_level
    mf.conv_tol = ref.conv_tol
    with lib.with_omp_threads(1):
        mf.kernel()
    assert abs(mf.e_tot - attrs["e_tot"]) < 1e-9
    e_plugin = _plugin_ex(mol, mf.grids, mf.make_rdm1(), fn)
    # (min_weight=0: every point stored; the default 1e-12 drops points worth
    # ~2e-10 Hartree here)
    assert abs(e_train - e_plugin) < 1e-11 * abs(e_plugin), (e_train, e_plugin)
