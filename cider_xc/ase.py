"""An ASE calculator for molecules: PySCF with a CIDER functional (or any PySCF xc).

>>> from ase.build import molecule
>>> from cider_xc.ase import CiderPySCF
>>> atoms = molecule("H2O")
>>> atoms.calc = CiderPySCF(basis="def2-tzvp")      # the shipped default functional
>>> atoms.get_potential_energy()                    # eV
>>> atoms.get_forces()                              # eV/Angstrom

Units: ASE's eV and Angstrom at the boundary only.  Positions are converted
to Bohr with ASE's own constant and handed to PySCF in Bohr, and energies and
gradients come back through ASE's Hartree and Hartree/Bohr, so the forces are
the exact derivative of the energy in ASE's units.

Periodic systems are GPAW's job (``GPAW(mode=PW(...), xc=cider_xc.gpaw.CiderXC())``);
this calculator refuses them.  An SCF that does not converge raises
:class:`SCFNotConvergedError` (unless ``allow_unconverged=True``); it never
hands back an unconverged energy silently.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from ase.calculators.calculator import (Calculator, InputError, SCFError, all_changes,
                                        compare_atoms)
from ase.units import Bohr, Hartree
from ase.utils import IOContext

from .model import CiderFunctional

#: strings that mean "the shipped default CIDER functional"
DEFAULT_ALIASES = ("cider", "default")

#: parameters whose change leaves previous results valid
_HARMLESS = frozenset({"txt", "verbose", "allow_unconverged"})


class SCFNotConvergedError(SCFError):
    """The PySCF SCF did not converge (a :class:`ase.calculators.calculator.SCFError`)."""


def resolve_xc(xc):
    """What ``xc`` means: a :class:`~cider_xc.CiderFunctional`, or an xc string.

    * None, "cider" or "default": the shipped default CIDER functional;
    * a shipped name (``cider_xc.available()``, any case) or the path of a model file
      (ending in .npz or containing a path separator): that CIDER functional;
    * a CiderFunctional: itself;
    * any other string: returned unchanged, for the DFT code to interpret
      ("PBE", "PBE0", "B3LYP", "0.25*HF + 0.75*PBE, PBE", ...).
    """
    import cider_xc
    if xc is None or (isinstance(xc, str) and xc.strip().lower() in DEFAULT_ALIASES):
        return cider_xc.load()
    if isinstance(xc, CiderFunctional):
        return xc
    if isinstance(xc, os.PathLike):
        xc = os.fspath(xc)
    if not isinstance(xc, str):
        raise TypeError(f"xc must be a CiderFunctional, a functional name or a model path, "
                        f"not {type(xc).__name__}")
    if (xc.strip().lower() in {n.lower() for n in cider_xc.available()}
            or xc.endswith(".npz") or os.sep in xc):
        return cider_xc.load(xc.strip())
    return xc


def describe_xc(xc):
    """A short, JSON-friendly description of a resolved xc."""
    if isinstance(xc, CiderFunctional):
        return xc.describe()
    return str(xc)


def _check_pyscf_xc(xc):
    """Fail early, with a clear message, on an xc string PySCF does not know."""
    if isinstance(xc, CiderFunctional):
        return
    from pyscf.dft import libxc
    try:
        libxc.parse_xc(xc)
    except (KeyError, ValueError) as err:
        import cider_xc
        raise ValueError(
            f"unknown functional {xc!r}: not a shipped CIDER functional "
            f"{cider_xc.available()}, not a model file, and PySCF cannot parse it ({err})"
        ) from None


def default_spin(atoms, charge=0):
    """2S from the atoms, as ASE calculators do: the rounded sum of the initial
    magnetic moments; with no moments, 0 for an even and 1 for an odd number
    of electrons."""
    nelec = int(atoms.get_atomic_numbers().sum()) - int(charge)
    magmom = float(np.sum(atoms.get_initial_magnetic_moments()))
    spin = int(round(abs(magmom)))
    if spin == 0:
        spin = nelec % 2
    _check_spin(atoms, nelec, spin, charge)
    return spin


def _check_spin(atoms, nelec, spin, charge):
    formula = atoms.get_chemical_formula()
    if nelec <= 0:
        raise InputError(f"{formula} with charge {charge} has {nelec} electrons")
    if spin < 0 or spin > nelec or (nelec - spin) % 2:
        raise InputError(
            f"{formula} with charge {charge} has {nelec} electrons, which cannot have "
            f"2S = {spin} (unpaired electrons must have the parity of the electron count); "
            "set spin= (2S) explicitly or fix the initial magnetic moments")


class CiderPySCF(Calculator, IOContext):
    """ASE calculator running molecular PySCF Kohn-Sham DFT.

    Parameters
    ----------
    xc : CiderFunctional, str or None
        None (default) or "cider": the shipped default CIDER functional; a
        shipped name or model path (see :func:`resolve_xc`); or any PySCF xc
        string such as "PBE" or "PBE0".
    basis : str or dict
        PySCF basis (default "def2-svp").
    charge : int
        Net charge (default 0).
    spin : int or None
        2S, the number of unpaired electrons.  None: from the atoms' initial
        magnetic moments, or 0/1 from the electron parity (see
        :func:`default_spin`).
    unrestricted : bool or None
        None: RKS for spin 0, UKS otherwise.  True forces UKS.
    density_fit : bool or str
        Density fitting for the Coulomb (and exchange) terms; a string names
        the auxiliary basis.
    grid_level : int
        PySCF ``grids.level`` (default 3).
    conv_tol, conv_tol_grad, max_cycle
        PySCF SCF convergence settings (energy in Hartree).
    fallback : bool
        If DIIS does not converge, retry with ADIIS from the PBE density
        (:mod:`cider_xc.pyscf.fallback`) before giving up (default True).
    allow_unconverged : bool
        Return the energy of an unconverged SCF with a warning instead of
        raising :class:`SCFNotConvergedError` (default False).
    grid_response : bool
        Include the response of the integration grid (points and Becke
        weights moving with the atoms) in the forces, so that they are the
        exact derivative of the returned energy (default True; PySCF's own
        default is False).  Without it the forces differ from that
        derivative by the grid error, which is large on coarse grids for
        CIDER functionals (measured for a water molecule: ~2 eV/Angstrom at
        grid level 1, ~3e-3 eV/Angstrom at level 3).
    txt : None, "-", path or file
        Where PySCF writes its log (None: nowhere; "-": stdout).
    verbose : int or None
        PySCF verbosity; None means 0 without txt and 4 with it.

    After a calculation ``calc.mf`` is the converged PySCF object.  The
    density matrix is reused as the initial guess of the next geometry when
    the elements, basis, charge, spin and restricted/unrestricted choice are
    the same.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]
    default_parameters = dict(xc=None, basis="def2-svp", charge=0, spin=None,
                              unrestricted=None, density_fit=False, grid_level=3,
                              conv_tol=1e-9, conv_tol_grad=None, max_cycle=100,
                              fallback=True, allow_unconverged=False, grid_response=True,
                              txt=None, verbose=None)
    discard_results_on_any_change = False

    def __init__(self, atoms=None, **kwargs):
        self._xc = None
        self.mf = None
        self.converged = None
        self._scf_atoms = None
        self._guess = None           # (key, dm) of the last converged SCF
        self._log = None
        super().__init__(atoms=atoms, **kwargs)
        if self._xc is None:
            self._set_xc(self.parameters.xc)

    # ---------------------------------------------------------------- setup
    def set(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise TypeError(f"CiderPySCF: unknown parameter(s) {unknown}; known: "
                            f"{sorted(self.default_parameters)}")
        changed = super().set(**kwargs)
        if "xc" in changed:
            self._set_xc(changed["xc"])
        if "txt" in changed:
            self._close_log()
        if set(changed) - _HARMLESS:
            self.reset()
        return changed

    def _set_xc(self, xc):
        xc = resolve_xc(xc)
        _check_pyscf_xc(xc)
        self._xc = xc

    @property
    def xc(self):
        """The resolved functional (CiderFunctional or xc string)."""
        return self._xc

    def reset(self):
        super().reset()
        self.mf = None
        self.converged = None
        self._scf_atoms = None

    def todict(self, skip_default=True):
        dct = super().todict(skip_default=skip_default)
        if isinstance(dct.get("xc"), CiderFunctional):
            dct["xc"] = describe_xc(dct["xc"])
        if "txt" in dct and not isinstance(dct["txt"], (str, type(None))):
            dct["txt"] = str(dct["txt"])
        return dct

    def _stdout(self):
        if self._log is None:
            from ase.parallel import world
            self._log = self.openfile(self.parameters.txt, comm=world, mode="a")
        return self._log

    def _close_log(self):
        self.close()
        self._log = None
        self.__dict__.pop("_exitstack", None)

    def _verbose(self):
        v = self.parameters.verbose
        if v is None:
            v = 0 if self.parameters.txt is None else 4
        return int(v)

    # ---------------------------------------------------------------- work
    def build_mole(self, atoms):
        """The PySCF Mole of ``atoms`` (positions in Bohr)."""
        from pyscf import gto
        if len(atoms) == 0:
            raise InputError("CiderPySCF: the Atoms object has no atoms")
        if atoms.pbc.any():
            raise InputError(
                f"CiderPySCF handles molecules only, but {atoms.get_chemical_formula()} "
                f"has periodic boundary conditions (pbc={atoms.pbc.tolist()}). For "
                "periodic systems use GPAW with the CIDER plugin: "
                "GPAW(mode=PW(ecut), xc=cider_xc.gpaw.CiderXC(), kpts=...) "
                "(or `cider-xc label --code gpaw`); for a molecule, set atoms.pbc = False")
        if (atoms.numbers <= 0).any():
            raise InputError("CiderPySCF: dummy atoms (atomic number 0) are not supported")
        p = self.parameters
        charge = int(p.charge)
        if p.spin is None:
            spin = default_spin(atoms, charge)
        else:
            spin = int(p.spin)
            _check_spin(atoms, int(atoms.numbers.sum()) - charge, spin, charge)
        mol = gto.Mole()
        mol.atom = [(s, tuple(r)) for s, r in
                    zip(atoms.get_chemical_symbols(), atoms.positions / Bohr)]
        mol.unit = "Bohr"
        mol.basis = p.basis
        mol.charge = charge
        mol.spin = spin
        mol.verbose = self._verbose()
        mol.stdout = self._stdout()
        mol.build(dump_input=False, parse_arg=False)
        return mol

    def _unrestricted(self, mol):
        u = self.parameters.unrestricted
        return mol.spin != 0 if u is None else bool(u)

    def _guess_key(self, atoms, mol, unrestricted):
        p = self.parameters
        return (tuple(atoms.numbers), repr(p.basis), mol.charge, mol.spin, unrestricted,
                mol.nao_nr())

    def build_scf(self, mol):
        """The (not yet run) PySCF Kohn-Sham object for ``mol``."""
        from pyscf import dft
        p = self.parameters
        unrestricted = self._unrestricted(mol)
        mf = dft.UKS(mol) if unrestricted else dft.RKS(mol)
        if p.density_fit:
            mf = mf.density_fit(auxbasis=p.density_fit if isinstance(p.density_fit, str)
                                else None)
        if isinstance(self._xc, CiderFunctional):
            from .pyscf import hook
            hook.install()
        mf.xc = self._xc
        mf.grids.level = int(p.grid_level)
        mf.conv_tol = float(p.conv_tol)
        if p.conv_tol_grad is not None:
            mf.conv_tol_grad = float(p.conv_tol_grad)
        mf.max_cycle = int(p.max_cycle)
        return mf

    def _run_scf(self, atoms):
        mol = self.build_mole(atoms)
        mf = self.build_scf(mol)
        key = self._guess_key(atoms, mol, self._unrestricted(mol))
        dm0 = self._guess[1] if self._guess is not None and self._guess[0] == key else None
        mf.kernel(dm0=dm0)
        if not mf.converged and self.parameters.fallback:
            from .pyscf import fallback
            fallback.kernel(mf, max_cycle=max(150, int(self.parameters.max_cycle)))
        self.mf = mf
        self.converged = bool(mf.converged)
        self._scf_atoms = atoms.copy()
        if not mf.converged:
            msg = (f"PySCF SCF did not converge for {atoms.get_chemical_formula()} "
                   f"({len(atoms)} atoms, charge {mol.charge}, 2S={mol.spin}) with "
                   f"xc={describe_xc(self._xc)}, basis={self.parameters.basis!r}, "
                   f"max_cycle={self.parameters.max_cycle}"
                   f"{' and the ADIIS fallback' if self.parameters.fallback else ''}; "
                   f"last energy {mf.e_tot:.8f} Hartree. Raise max_cycle, change the "
                   "geometry/spin, or pass allow_unconverged=True to accept it")
            if not self.parameters.allow_unconverged:
                self._guess = None
                raise SCFNotConvergedError(msg)
            warnings.warn(msg + " (accepted: allow_unconverged=True)", RuntimeWarning)
        else:
            self._guess = (key, mf.make_rdm1())
        self.results["energy"] = float(mf.e_tot) * Hartree
        self.results["free_energy"] = self.results["energy"]
        self.results["dipole"] = np.asarray(
            mf.dip_moment(unit="AU", verbose=0)) * Bohr      # e*Angstrom

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if (self.mf is None or self._scf_atoms is None or "energy" not in self.results
                or compare_atoms(self._scf_atoms, atoms)):
            self.results = {}
            self._run_scf(atoms)
        if "forces" in properties and "forces" not in self.results:
            g = self.mf.nuc_grad_method()
            g.verbose = self.mf.verbose
            g.grid_response = bool(self.parameters.grid_response)
            grad = g.kernel()                                  # Hartree/Bohr
            self.results["forces"] = -np.asarray(grad) * (Hartree / Bohr)


#: a second name, for symmetry with cider_xc.gpaw.CiderGPAW
CiderCalculator = CiderPySCF

__all__ = ["CiderPySCF", "CiderCalculator", "SCFNotConvergedError", "resolve_xc",
           "describe_xc", "default_spin"]
