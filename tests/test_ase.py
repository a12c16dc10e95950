"""cider_xc.ase.CiderPySCF: the ASE calculator for molecules (PySCF).

Small molecules, minimal basis, coarse grids: these check units, plumbing and
error handling, not converged numbers."""
import json
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import InputError
from ase.units import Bohr, Hartree

import cider_xc
from cider_xc.ase import CiderPySCF, SCFNotConvergedError, default_spin, resolve_xc
from cider_xc.model import CiderFunctional


def _water(seed=3):
    """A distorted water molecule: no symmetry, so every force component is nonzero."""
    m = molecule("H2O")
    m.rattle(0.05, seed=seed)
    return m


def _direct(atoms, xc, basis="sto-3g", grid_level=2, spin=0):
    """Energy (Hartree) and gradient (Hartree/Bohr) of a plain PySCF run."""
    from pyscf import dft, gto
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(),
                                                     atoms.positions / Bohr)],
                unit="Bohr", basis=basis, spin=spin, verbose=0)
    mf = (dft.RKS if spin == 0 else dft.UKS)(mol)
    mf.xc = xc
    mf.grids.level = grid_level
    mf.conv_tol = 1e-11
    e = mf.kernel()
    return e, mf


def _fd_forces(atoms, h=1e-3):
    """Central finite differences of the calculator's energy, eV/Angstrom."""
    a = atoms.copy()
    a.calc = atoms.calc
    f = np.zeros((len(a), 3))
    for i in range(len(a)):
        for k in range(3):
            a.positions[i, k] += h
            ep = a.get_potential_energy()
            a.positions[i, k] -= 2 * h
            em = a.get_potential_energy()
            a.positions[i, k] += h
            f[i, k] = -(ep - em) / (2 * h)
    return f


def test_energy_and_forces_are_pyscf_in_ev_and_angstrom():
    atoms = _water()
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2, conv_tol=1e-11)
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    e_ha, mf = _direct(atoms, "PBE")
    assert e == pytest.approx(e_ha * Hartree, abs=1e-7)
    assert atoms.calc.get_property("free_energy", atoms) == e
    # the default includes the grid response
    grad = mf.nuc_grad_method().set(grid_response=True).kernel()
    np.testing.assert_allclose(f, -grad * Hartree / Bohr, atol=1e-6)
    assert isinstance(atoms.calc.mf.mol.atom, list) and atoms.calc.mf.mol.unit == "Bohr"
    np.testing.assert_allclose(atoms.calc.mf.mol.atom_coords() * Bohr, atoms.positions,
                               atol=1e-12)
    # the dipole in e*Angstrom
    d_au = mf.dip_moment(unit="AU", verbose=0)
    np.testing.assert_allclose(atoms.get_dipole_moment(), d_au * Bohr, atol=1e-8)


def test_pbe_forces_match_finite_differences_of_the_energy():
    """With the grid response the forces are the derivative of the energy the
    calculator returns (eV/Angstrom); without it they differ by the moving
    grid's error, which is what PySCF's default neglects."""
    atoms = _water()
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2, conv_tol=1e-11,
                            grid_response=True)
    f = atoms.get_forces()
    fd = _fd_forces(atoms)
    assert np.abs(f).min() > 1e-3                   # every component is tested
    np.testing.assert_allclose(f, fd, atol=1e-4)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-4)   # translation
    atoms.calc.set(grid_response=False)
    f_nogrid = atoms.get_forces()
    assert 1e-4 < np.abs(f_nogrid - fd).max() < 1e-2


def test_cider_forces_match_finite_differences_of_the_energy():
    """The shipped default functional: analytic CIDER gradients (with the grid
    response, the default) are the derivative of the calculator's energy, on a
    coarse grid where leaving the grid response out is visibly wrong."""
    atoms = _water()
    atoms.calc = CiderPySCF(basis="sto-3g", grid_level=1, conv_tol=1e-11)
    assert isinstance(atoms.calc.xc, CiderFunctional)
    f = atoms.get_forces()
    # one component per atom and direction (FD of all nine costs 18 CIDER SCFs)
    comps = [(0, 2), (1, 0), (1, 1), (2, 2)]
    h = 1e-3
    for i, k in comps:
        fd = -(atoms.calc.get_potential_energy(_shift(atoms, i, k, h))
               - atoms.calc.get_potential_energy(_shift(atoms, i, k, -h))) / (2 * h)
        assert abs(f[i, k]) > 1e-2
        assert f[i, k] == pytest.approx(fd, abs=1e-4), (i, k)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-4)
    e_pbe_calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1, conv_tol=1e-11)
    assert np.abs(e_pbe_calc.get_forces(atoms) - f).max() > 1e-2     # not PBE's forces
    # without the grid response the forces move visibly at grid level 1:
    # 0.07 eV/A with the shipped default (PBE's own grid-response term
    # there is about 0.01 eV/A; the earlier default, rougher, gave > 0.1)
    atoms.calc.set(grid_response=False)
    assert np.abs(atoms.get_forces() - f).max() > 0.03


def test_open_shell_and_uhf_forces_match_finite_differences():
    """OH radical: odd electron count -> UKS with 2S = 1."""
    atoms = Atoms("OH", positions=[(0, 0, 0), (0.1, 0.05, 0.98)])
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2, conv_tol=1e-11,
                            grid_response=True)
    f = atoms.get_forces()
    mf = atoms.calc.mf
    assert mf.mol.spin == 1 and mf.istype("UKS")
    e_ha, _ = _direct(atoms, "PBE", spin=1)
    assert atoms.get_potential_energy() == pytest.approx(e_ha * Hartree, abs=1e-7)
    np.testing.assert_allclose(f, _fd_forces(atoms), atol=1e-4)


def test_spin_from_magnetic_moments_and_electron_parity():
    o2 = Atoms("O2", positions=[(0, 0, 0), (0, 0, 1.22)])
    assert default_spin(o2) == 0
    o2.set_initial_magnetic_moments([1.0, 1.0])
    assert default_spin(o2) == 2
    assert default_spin(Atoms("H")) == 1
    assert default_spin(Atoms("H"), charge=-1) == 0
    h2o = molecule("H2O")
    h2o.set_initial_magnetic_moments([1.0, 0, 0])
    with pytest.raises(InputError, match="10 electrons.*2S = 1"):
        default_spin(h2o)
    # the triplet is the ground state of O2, and the calculator finds it from the moments
    o2.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1)
    e_triplet = o2.get_potential_energy()
    assert o2.calc.mf.mol.spin == 2
    o2.calc.set(spin=0)
    e_singlet = o2.get_potential_energy()
    assert o2.calc.mf.mol.spin == 0 and o2.calc.mf.istype("RKS")
    assert e_triplet < e_singlet
    with pytest.raises(InputError, match="cannot have 2S = 1"):
        o2.calc.set(spin=1)
        o2.get_potential_energy()


def test_default_xc_is_the_shipped_cider_functional():
    atoms = molecule("H2O")
    calc = CiderPySCF(basis="sto-3g", grid_level=2)
    assert isinstance(calc.xc, CiderFunctional) and calc.xc.name == cider_xc.DEFAULT_FUNCTIONAL
    atoms.calc = calc
    e = atoms.get_potential_energy()
    e_ha, _ = _direct(atoms, cider_xc.load())
    assert e == pytest.approx(e_ha * Hartree, abs=1e-6)
    e_pbe, _ = _direct(atoms, "PBE")
    assert abs(e - e_pbe * Hartree) > 0.1          # it really is not PBE
    # the parameters stay serialisable (ASE trajectories store them)
    d = calc.todict()
    assert json.loads(json.dumps(d)) == d


def test_xc_resolution():
    fn = cider_xc.load("test-nl")
    assert resolve_xc(fn) is fn
    assert resolve_xc("test-nl").name == "test-nl"
    assert resolve_xc("CIDER").name == cider_xc.DEFAULT_FUNCTIONAL
    assert resolve_xc(None).name == cider_xc.DEFAULT_FUNCTIONAL
    assert resolve_xc("PBE0") == "PBE0"
    with pytest.raises(ValueError, match="unknown functional 'NOT_A_FUNCTIONAL'.*cider-pbe0"):
        CiderPySCF(xc="NOT_A_FUNCTIONAL")
    with pytest.raises(TypeError, match="unknown parameter.*bassis"):
        CiderPySCF(bassis="sto-3g")


def test_periodic_atoms_are_refused_with_a_pointer_to_gpaw():
    si = bulk("Si", "diamond", 5.43)
    si.calc = CiderPySCF(xc="PBE", basis="sto-3g")
    with pytest.raises(InputError, match=r"Si2 has periodic.*GPAW.*cider_xc\.gpaw\.CiderXC"):
        si.get_potential_energy()
    slab = molecule("H2")
    slab.cell = [5, 5, 5]
    slab.pbc = [True, True, False]
    slab.calc = CiderPySCF(xc="PBE", basis="sto-3g")
    with pytest.raises(InputError, match="periodic"):
        slab.get_potential_energy()


def test_unconverged_scf_raises_unless_allowed():
    atoms = molecule("H2O")
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1, max_cycle=2,
                            fallback=False)
    with pytest.raises(SCFNotConvergedError, match=r"did not converge for H2O.*max_cycle=2"):
        atoms.get_potential_energy()
    assert atoms.calc.converged is False
    atoms.calc.set(allow_unconverged=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        e = atoms.get_potential_energy()
    assert any("accepted" in str(x.message) for x in w)
    assert np.isfinite(e) and atoms.calc.converged is False


def test_fallback_rescues_a_too_short_diis_run():
    """fallback=True retries (ADIIS from the PBE density, 150 cycles) instead of failing."""
    atoms = molecule("H2O")
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1, max_cycle=2)
    e = atoms.get_potential_energy()
    assert atoms.calc.converged
    ref = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1)
    assert e == pytest.approx(ref.get_potential_energy(molecule("H2O")), abs=1e-6)


def test_density_matrix_is_reused_between_geometries():
    a0 = _water(seed=1)
    a1 = a0.copy()
    a1.positions[1] += (0.01, -0.01, 0.005)
    calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2)
    a0.calc = calc
    a0.get_potential_energy()
    a1.calc = calc
    e_reused = a1.get_potential_energy()
    cycles_reused = calc.mf.cycles
    fresh = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2)
    a1.calc = fresh
    e_fresh = a1.get_potential_energy()
    assert e_reused == pytest.approx(e_fresh, abs=1e-6)
    assert cycles_reused < fresh.mf.cycles
    # a different basis does not reuse it (the shapes differ): it still runs
    calc.set(basis="6-31g")
    a1.calc = calc
    a1.get_potential_energy()
    assert calc.mf.mol.nao_nr() == 13


def test_forces_after_energy_do_not_rerun_the_scf_and_changes_do():
    atoms = _water()
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=1)
    atoms.get_potential_energy()
    mf = atoms.calc.mf
    atoms.get_forces()
    assert atoms.calc.mf is mf
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert atoms.calc.mf is not mf
    mf = atoms.calc.mf
    atoms.calc.set(basis="6-31g")
    atoms.get_potential_energy()
    assert atoms.calc.mf is not mf


def test_density_fitting_and_log_file(tmp_path):
    atoms = _water()
    log = tmp_path / "pyscf.log"
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2, density_fit=True,
                            conv_tol=1e-11, txt=str(log))
    e_df = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert atoms.calc.mf.istype("_DFHF") or hasattr(atoms.calc.mf, "with_df")
    e_ha, _ = _direct(atoms, "PBE")
    assert 1e-6 < abs(e_df - e_ha * Hartree) < 0.05
    fx = -(atoms.calc.get_potential_energy(_shift(atoms, 0, 0, 1e-3))
           - atoms.calc.get_potential_energy(_shift(atoms, 0, 0, -1e-3))) / 2e-3
    assert f[0, 0] == pytest.approx(fx, abs=5e-3)
    atoms.calc.close()
    text = log.read_text()
    assert "converged SCF energy" in text


def _shift(atoms, i, k, h):
    a = atoms.copy()
    a.positions[i, k] += h
    return a


def test_ase_optimizer_runs_with_a_trajectory(tmp_path):
    from ase.io import read
    from ase.optimize import BFGS
    atoms = molecule("H2")
    atoms.positions[1, 2] += 0.1
    atoms.calc = CiderPySCF(xc="PBE", basis="sto-3g", grid_level=2, grid_response=True)
    traj = tmp_path / "h2.traj"
    with BFGS(atoms, trajectory=str(traj), logfile=None) as opt:
        assert opt.run(fmax=0.01, steps=30)
    assert np.abs(atoms.get_forces()).max() < 0.01
    # PBE/STO-3G H2 bond: the energy minimum along the bond, by bracketing
    d = atoms.get_distance(0, 1)
    for s in (-0.005, 0.005):
        b = atoms.copy()
        b.set_distance(0, 1, d + s)
        assert atoms.calc.get_potential_energy(b) > atoms.get_potential_energy()
    assert len(read(str(traj), ":")) >= 2
