"""SCF convergence of the shipped default with plain mf.kernel() where the
previous default failed (issue 19), heavier elements with ECPs (issue 18) and
the out-of-domain warning, and the semilocal start (cider_xc.pyscf.start).
Isolated atoms in a GPAW box: tests/test_gpaw_vacuum.py."""
import io

import numpy as np
import pytest
from pyscf import dft, gto

import cider_xc
from cider_xc.training.systems import atom_system

HARTREE_TO_KCAL = 627.5094740631


def _run(mol, xc, df=False):
    mf = (dft.UKS if mol.spin else dft.RKS)(mol)
    if df:
        mf = mf.density_fit()
    mf.xc = xc
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    e = mf.kernel()
    return e, mf.converged, len(cycles), mf


@pytest.mark.parametrize("df", [False, True])
def test_li_atom_converges_with_plain_kernel(df):
    """The previous default stalled and diverged here (50 cycles, 2.3 Hartree
    off); the regularised alpha removes the n^(-1/3) tau potential of the
    one-orbital spin channel."""
    mol = atom_system("Li").to_mol("def2-svp")
    e_pbe, conv_pbe, cyc_pbe, _ = _run(mol, "PBE", df)
    e, conv, cyc, mf = _run(mol, cider_xc.load(), df)
    assert conv and conv_pbe
    assert cyc <= 2 * cyc_pbe + 2, (cyc, cyc_pbe)
    assert abs(mf.spin_square()[0] - 0.75) < 0.01
    e_pbe0 = _run(mol, "PBE0", df)[0]
    assert abs(e - e_pbe0) * HARTREE_TO_KCAL < 10


def test_b_atom_converges_without_density_fitting():
    """The previous default (RBF length scale 0.5, cider-pbe0-v2) wandered for
    50 cycles here (def2-SVP, no DF): after the semilocal start the p hole's
    orientation sat on a bumpy, almost flat grid landscape with an orbital
    gradient of 3e-5 to 1e-4 and DIIS drifted along it.  With this release's
    default and the unpruned atom grid it converges in 5 cycles in a fresh
    process, 17 in the full test session (2 threads, other modules loaded):
    the path along the still slightly bumpy orientation landscape depends on
    rounding, so the bound is 20 cycles, well below the 50 of the failure."""
    mol = atom_system("B").to_mol("def2-svp")
    e_pbe, conv_pbe, cyc_pbe, _ = _run(mol, "PBE")
    e, conv, cyc, mf = _run(mol, cider_xc.load())
    assert conv and conv_pbe and mf.grids.prune is None
    assert cyc <= 20, (cyc, cyc_pbe)
    assert abs(mf.spin_square()[0] - 0.75) < 0.01


def test_hi_with_ecp_near_pbe0():
    """A def2-ECP molecule (held out from training): the previous default was
    200 kcal/mol off PBE0 here."""
    from cider_xc.training import systems
    import os
    path = os.path.join(cider_xc.functionals_dir(), "..", "training", "heldout-ecp.extxyz")
    hi = [s for s in systems.resolve(os.path.normpath(path)) if s.name == "HI"][0]
    mol = hi.to_mol("def2-svp")
    assert mol.has_ecp()
    e, conv, cyc, _ = _run(mol, cider_xc.load(), df=True)
    e0, conv0, cyc0, _ = _run(mol, "PBE0", df=True)
    assert conv and conv0
    assert abs(e - e0) * HARTREE_TO_KCAL < 10, (e - e0) * HARTREE_TO_KCAL


def test_out_of_domain_warning_fires_and_stays_quiet():
    """One warning through PySCF's logger when the share of exchange energy on
    uncertain points exceeds the model's threshold; none for water with the
    shipped (calibrated) thresholds."""
    mol = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="sto-3g",
                verbose=0)
    fn = cider_xc.load()
    assert "domain" in fn.header and fn.header["domain"]["weight_fraction"] > 0
    mf = dft.RKS(mol)
    mf.xc = fn
    mf.grids.level = 1
    mf.kernel()
    assert mf.cider_domain_report["out_of_domain"] is False
    # the same calculation with thresholds that make every point "unseen"
    strict = cider_xc.load()
    strict.header["domain"] = {"point_std": 0.0, "weight_fraction": 0.0}
    buf = io.StringIO()
    mol2 = gto.M(atom=mol.atom, basis="sto-3g", verbose=3)
    mol2.stdout = buf
    mf2 = dft.RKS(mol2)
    mf2.xc = strict
    mf2.grids.level = 1
    mf2.kernel()
    rep = mf2.cider_domain_report
    assert rep["out_of_domain"] and rep["weight_above_threshold"] > 0.99
    log = buf.getvalue()
    assert log.count("outside its training domain") == 1
    assert "%" in log.split("outside its training domain")[1].splitlines()[0]
    # and it can be switched off
    mf3 = dft.RKS(mol)
    mf3.xc = strict
    mf3.grids.level = 1
    mf3.cider_domain_check = False
    mf3.kernel()
    assert not hasattr(mf3, "cider_domain_report")


def test_semilocal_start_converges_a_degenerate_open_shell():
    """The F atom (a degenerate, partly filled p shell) at def2-TZVP with DF
    stalls from PySCF's atomic guess (|g| ~ 1e-4 for 50 cycles); plain
    mf.kernel() starts from the PBE analogue's density and converges."""
    mol = atom_system("F").to_mol("def2-tzvp")
    mol.verbose = 0
    e, conv, cyc, mf = _run(mol, cider_xc.load(), df=True)
    assert conv and 0 < mf.cider_start_cycles < 20 and cyc < 40, (conv, mf.cider_start_cycles,
                                                                   cyc)
    # off: PySCF's guess, as before this release (it stalls here)
    mf_off = dft.UKS(mol).density_fit()
    mf_off.xc = cider_xc.load()
    mf_off.cider_start = False
    mf_off.max_cycle = 15
    mf_off.kernel()
    assert mf_off.cider_start_cycles == 0


def test_semilocal_start_auto_runs_for_open_shells_only():
    """The default cider_start='auto': closed shells start from PySCF's
    guess (no semilocal cycles), open shells from the PBE analogue; a value
    other than 'auto', True, False is refused with an error naming them."""
    h2o = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="sto-3g",
                verbose=0)
    mf = dft.RKS(h2o)
    mf.xc = cider_xc.load()
    mf.max_cycle = 2
    mf.kernel()
    assert mf.cider_start_cycles == 0
    oh = gto.M(atom="O 0 0 0; H 0 0 0.97", basis="sto-3g", spin=1, verbose=0)
    mf = dft.UKS(oh)
    mf.xc = cider_xc.load()
    mf.max_cycle = 2
    mf.kernel()
    assert mf.cider_start_cycles > 0
    mf = dft.RKS(h2o)
    mf.xc = cider_xc.load()
    mf.cider_start = "yes"
    with pytest.raises(ValueError, match="'auto'"):
        mf.kernel()


def test_semilocal_start_keeps_the_solution_and_the_users_choices(tmp_path):
    """Same converged energy with and without the start (it only changes
    where the SCF begins); an explicit dm0 or init_guess='chk' is used as
    given; the start never writes the user's checkpoint file."""
    mol = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="def2-svp",
                verbose=0)
    chk = str(tmp_path / "h2o.chk")
    mf = dft.RKS(mol)
    mf.xc = cider_xc.load()
    mf.chkfile = chk
    mf.conv_tol = 1e-10
    mf.cider_start = True           # closed shell: "auto" would skip it
    e_on = mf.kernel()
    assert mf.converged and mf.cider_start_cycles > 0
    mf2 = dft.RKS(mol)
    mf2.xc = cider_xc.load()
    mf2.cider_start = False
    mf2.conv_tol = 1e-10
    e_off = mf2.kernel()
    assert abs(e_on - e_off) < 1e-8
    # dm0 given: no start
    mf3 = dft.RKS(mol)
    mf3.xc = cider_xc.load()
    mf3.kernel(dm0=mf.make_rdm1())
    assert getattr(mf3, "cider_start_cycles", 0) == 0 and mf3.cycles <= 3
    # restart from the user's chkfile (written by the CIDER SCF, not the start)
    from pyscf.lib import chkfile
    stored = chkfile.load(chk, "scf/xc")
    assert (stored.decode() if isinstance(stored, bytes) else stored) == mf.xc.xc_string()
    mf4 = dft.RKS(mol)
    mf4.xc = cider_xc.load()
    mf4.chkfile = chk
    mf4.init_guess = "chk"
    mf4.kernel()
    assert mf4.cider_start_cycles == 0 and abs(mf4.e_tot - e_on) < 1e-8


def test_domain_check_reuses_the_final_evaluation():
    """The post-SCF domain check reads the model inputs of the SCF's last CIDER
    evaluation (the final density's, with PySCF's conv_check) instead of
    recomputing the features: same report as uncertainty_report(mf), to
    rounding, for a closed and an open shell; inputs of another grid are
    never used."""
    from cider_xc.pyscf import domain
    from cider_xc.pyscf.features import uncertainty_report
    for atom, spin in (("O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", 0),
                       ("N 0 0 0.1494; H 0 0.8031 -0.4043; H 0 -0.8031 -0.4043", 1)):
        mol = gto.M(atom=atom, spin=spin, basis="sto-3g", verbose=0)
        mf = (dft.UKS if spin else dft.RKS)(mol)
        mf.xc = cider_xc.load()
        mf.grids.level = 1
        mf.kernel()
        assert "domain_inputs" not in mf._numint._cache      # released after use
        kept, ref = mf.cider_domain_report, uncertainty_report(mf)
        for k, v in ref.items():
            if isinstance(v, float):
                assert abs(kept[k] - v) <= 1e-9 * max(1.0, abs(v)), (k, kept[k], v)
        # inputs kept for one grid are not used for another
        mf.get_veff(mol, mf.make_rdm1())
        mf.grids = dft.gen_grid.Grids(mol)
        mf.grids.level = 2
        mf.grids.build()
        thr = mf.xc.domain_thresholds()[0]
        assert domain._report_from_kept_inputs(mf, mf.xc, thr) is None


def test_isolated_atom_gets_an_unpruned_angular_grid():
    """cider_xc.pyscf.atomgrid: 'auto' switches PySCF's default angular
    pruning off for a one-atom molecule (the F atom at def2-TZVP with DF took
    49 cycles on the pruned grid, 5 without in a fresh process), never for a molecule, never
    for a user's own pruning or with cider_atom_grid = False; other values
    are refused with an error naming the choices."""
    from pyscf.dft import gen_grid
    mol = atom_system("F").to_mol("def2-tzvp")
    log = io.StringIO()
    mol.stdout, mol.verbose = log, 4
    e, conv, cyc, mf = _run(mol, cider_xc.load(), df=True)
    assert conv and cyc <= 20, cyc      # 5 in a fresh process; see the B atom test
    assert mf.grids.prune is None and "angular grid pruning off" in log.getvalue()
    # the start (PBE analogue) ran on the same unpruned grid
    assert 0 < mf.cider_start_cycles

    def grid_after(mol, xc, **attrs):
        mf = (dft.UKS if mol.spin else dft.RKS)(mol)
        mf.xc = xc
        for k, v in attrs.items():
            setattr(mf, k, v)
        mf.initialize_grids(mol)
        return mf.grids.prune

    atom = gto.M(atom="Ne 0 0 0", basis="sto-3g", verbose=0)
    water = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="sto-3g",
                  verbose=0)
    assert grid_after(atom, cider_xc.load()) is None
    assert grid_after(atom, "PBE") is gen_grid.nwchem_prune
    assert grid_after(atom, cider_xc.load(), cider_atom_grid=False) is gen_grid.nwchem_prune
    assert grid_after(water, cider_xc.load()) is gen_grid.nwchem_prune
    assert grid_after(water, cider_xc.load(), cider_atom_grid=True) is None
    assert grid_after(atom, cider_xc.load(), cider_atom_grid=np.False_) is gen_grid.nwchem_prune
    mf = dft.RKS(atom)
    mf.xc = cider_xc.load()
    mf.grids.prune = gen_grid.treutler_prune          # the user's own choice stays
    mf.initialize_grids(atom)
    assert mf.grids.prune is gen_grid.treutler_prune
    with pytest.raises(ValueError, match="cider_atom_grid"):
        grid_after(atom, cider_xc.load(), cider_atom_grid="yes")
