"""``cider-xc label``: DFT labels for every structure of an extxyz trajectory.

Reads every frame of an extended-XYZ file (``ase.io.read(path, index=":")``,
so the output of any MD code that ASE reads), computes the energy and forces
(and the stress of fully periodic cells) with a CIDER functional or any other
xc, and writes an extxyz file that machine-learned potential fitters read
directly.

Codes: non-periodic structures run in PySCF (:class:`cider_xc.ase.CiderPySCF`),
periodic ones in GPAW plane waves with :class:`cider_xc.gpaw.CiderXC`
(``code="auto"``, the default, picks per structure by ``atoms.pbc``).

Keys written for every structure (units eV, Angstrom):

=====================  ======  ================================================
key                    where   meaning
=====================  ======  ================================================
``energy``             info    total energy; the force-consistent (free) energy
                               when GPAW smears occupations
``forces``             arrays  forces, eV/Angstrom
``stress``             info    stress (fully periodic cells only), eV/Angstrom^3,
                               ASE convention: ``stress = (1/V) dE/d(strain)``,
                               positive when the cell wants to shrink; written
                               as a 3x3 matrix by ASE, read back as ASE's Voigt
                               vector (xx, yy, zz, yz, xz, xy)
``REF_energy``         info    same as ``energy``
``REF_forces``         arrays  same as ``forces``
``REF_stress``         info    same as ``stress``, as the Voigt 6-vector
``REF_virials``        info    ``-stress * volume`` (eV), Voigt 6-vector
``input_index``        info    index of the structure in the input file
=====================  ======  ================================================

The standard keys are what ``ase.io.read`` turns back into a
SinglePointCalculator (``atoms.get_potential_energy()``, ``get_forces()``,
``get_stress()``); NequIP and Allegro take them from there. MACE's default
keys are ``REF_energy``/``REF_forces``/``REF_stress``/``REF_virials``.

Resumption: results are appended one structure at a time (flushed and
fsynced), and a sidecar state file ``OUTPUT.state.json`` records the settings,
the input's checksum, which input structures are done (with their byte range
in the output) and which failed (with the error).  Rerunning the same command
skips the done ones; a rerun with different settings is refused.  The output
lists structures in input order (failed ones are absent): each run processes
structures in input order, and when a retry (``retry_failed``) appends
structures out of order, the file is put back in input order at the end of
the run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import traceback

import numpy as np

STATE_VERSION = 1
REF = "REF_"

#: settings that may change between runs on the same output (they change how
#: hard the solver tries, not what is computed)
SOLVER_SETTINGS = ("max_cycle",)


class LabelError(Exception):
    """A problem with the input, the output or the settings of a label run
    (raised before any structure is computed)."""


class BadGeometryError(ValueError):
    """A structure that cannot be computed as given (overlapping atoms, NaN...)."""


@dataclasses.dataclass
class LabelSettings:
    """What is computed, and how.  Energies in eV, lengths in Angstrom."""

    code: str = "auto"              # "auto" (by pbc), "pyscf" or "gpaw"
    xc: str | None = None           # None: the shipped default CIDER functional
    # PySCF
    basis: str = "def2-svp"
    grid_level: int = 3
    density_fit: bool = False
    conv_tol: float = 1e-9          # Hartree
    grid_response: bool = True      # forces = exact derivative of the energy
    # both codes
    charge: int = 0
    spin: int | None = None         # PySCF 2S; GPAW takes spin from the atoms' magmoms
    max_cycle: int | None = None    # None: each code's default (PySCF 100, GPAW 333)
    energy_only: bool = False
    min_distance: float = 0.3       # Angstrom; closer atoms are a bad geometry
    # GPAW
    ecut: float = 500.0             # eV
    kpts: tuple | None = None
    kpt_density: float | None = None    # k-points per 1/Angstrom
    smearing: float | None = None   # Fermi-Dirac width, eV (None: GPAW's default)

    def __post_init__(self):
        if self.code not in ("auto", "pyscf", "gpaw"):
            raise LabelError(f"unsupported code {self.code!r}: choose auto, pyscf or gpaw")
        if self.kpts is not None:
            kpts = tuple(int(k) for k in self.kpts)
            if len(kpts) != 3 or min(kpts) < 1:
                raise LabelError(f"kpts must be three positive integers, not {self.kpts}")
            self.kpts = kpts
        if self.kpts is not None and self.kpt_density is not None:
            raise LabelError("give either kpts or kpt_density, not both")
        if self.ecut <= 0:
            raise LabelError(f"ecut must be positive (eV), not {self.ecut}")

    def todict(self):
        d = dataclasses.asdict(self)
        if d["kpts"] is not None:
            d["kpts"] = list(d["kpts"])
        return d


@dataclasses.dataclass
class LabelReport:
    """What a :func:`label` run did."""

    output: str
    state_path: str
    n_structures: int
    done: list
    failed: dict                    # index -> {"type", "message", ...}
    computed: list                  # indices computed (successfully) in this run
    skipped: int                    # done before this run
    reordered: bool = False

    @property
    def ok(self):
        return not self.failed


# ------------------------------------------------------------------ input
def read_structures(path):
    """All frames of an extxyz file, with errors that name the problem."""
    import ase.io
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LabelError(f"no such input file: {path}")
    if os.path.isdir(path):
        raise LabelError(f"input {path} is a directory, not an extxyz file")
    if os.path.getsize(path) == 0:
        raise LabelError(f"input {path} is empty")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as err:
        raise LabelError(f"cannot read {path} as extended XYZ (extxyz): "
                         f"{type(err).__name__}: {err}") from None
    if not frames:
        raise LabelError(f"input {path} holds no structures")
    return frames


def _sha256(path, nbytes=None):
    h = hashlib.sha256()
    left = os.path.getsize(path) if nbytes is None else nbytes
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def code_for(atoms, code):
    """The code that computes ``atoms``: ``code``, or by pbc for "auto"."""
    if code != "auto":
        return code
    return "gpaw" if atoms.pbc.any() else "pyscf"


def check_geometry(atoms, min_distance, code):
    """Raise BadGeometryError for structures no code should be given."""
    from ase.neighborlist import neighbor_list
    if not np.isfinite(atoms.positions).all():
        raise BadGeometryError("positions contain NaN or infinity")
    if code == "gpaw" and atoms.cell.volume < 1e-6:
        raise BadGeometryError(
            "GPAW needs a unit cell, and this structure has none; give periodic "
            "structures a cell, or put a molecule in a box (atoms.center(vacuum=...))")
    if atoms.pbc.any() and atoms.cell.volume < 1e-6:
        raise BadGeometryError(f"pbc={atoms.pbc.tolist()} but the cell has no volume")
    if min_distance and (len(atoms) > 1 or atoms.pbc.any()):
        i, j, d = neighbor_list("ijd", atoms, float(min_distance))
        if len(d):
            k = int(np.argmin(d))
            a, b = int(i[k]), int(j[k])
            what = "its own periodic image" if a == b else f"atom {b} ({atoms[b].symbol})"
            raise BadGeometryError(
                f"atom {a} ({atoms[a].symbol}) is {d[k]:.3f} Angstrom from {what}, "
                f"closer than min_distance={min_distance} Angstrom")


# ------------------------------------------------------------------ compute
class Labeller:
    """Computes the labels of one structure; keeps calculators between
    structures so consecutive MD frames start from the previous density."""

    def __init__(self, settings, txt=None):
        from .ase import resolve_xc
        self.settings = settings
        self.xc = resolve_xc(settings.xc)
        self.txt = txt
        self._pyscf = None
        self._gpaw = None
        self._gpaw_atoms = None

    def pyscf_calculator(self):
        if self._pyscf is None:
            from .ase import CiderPySCF
            s = self.settings
            kw = dict(xc=self.xc, basis=s.basis, charge=s.charge, spin=s.spin,
                      density_fit=s.density_fit, grid_level=s.grid_level,
                      conv_tol=s.conv_tol, grid_response=s.grid_response, txt=self.txt)
            if s.max_cycle is not None:
                kw["max_cycle"] = s.max_cycle
            self._pyscf = CiderPySCF(**kw)
        return self._pyscf

    def gpaw_calculator(self, atoms):
        """A GPAW calculator: the previous one (whose wave functions are a good
        start) when only the positions changed and the new positions have
        exactly the previous structure's symmetry; a fresh one otherwise, so
        that every structure is computed with its own symmetry, as if run
        alone (GPAW keeps the symmetry of its first structure: a less
        symmetric one fails with "Broken symmetry!", a more symmetric one
        would run with too few symmetries)."""
        from ase.calculators.calculator import compare_atoms
        if (self._gpaw is not None
                and set(compare_atoms(self._gpaw_atoms, atoms)) <= {"positions"}
                and self._same_symmetry(atoms)):
            return self._gpaw
        from gpaw import GPAW, PW
        from .model import CiderFunctional
        s = self.settings
        xc = self.xc
        if isinstance(xc, CiderFunctional):
            from .gpaw import CiderXC
            xc = CiderXC(xc)
        if s.kpts is not None:
            kpts = s.kpts
        elif s.kpt_density is not None:
            kpts = {"density": s.kpt_density, "gamma": True}
        else:
            raise LabelError("periodic structures need k-points: give kpts or kpt_density")
        kw = dict(mode=PW(s.ecut), xc=xc, kpts=kpts, charge=s.charge,
                  txt=self.txt, legacy_gpaw=True)
        if s.smearing is not None:
            kw["occupations"] = {"name": "fermi-dirac", "width": float(s.smearing)}
        if s.max_cycle is not None:
            kw["maxiter"] = int(s.max_cycle)
        self._gpaw = GPAW(**kw)
        return self._gpaw

    def _same_symmetry(self, atoms):
        """Whether ``atoms`` (same cell and atoms as the calculator's last
        structure) has exactly the symmetry operations GPAW found for it."""
        from gpaw.symmetry import Symmetry
        try:
            old = self._gpaw.wfs.kd.symmetry
        except AttributeError:          # nothing computed yet
            return False
        new = Symmetry(old.id_a, old.cell_cv, old.pbc_c, old.tol, old.point_group,
                       old.time_reversal, old.symmorphic)
        new.analyze(atoms.get_scaled_positions())
        return (new.op_scc.shape == old.op_scc.shape
                and np.array_equal(new.op_scc, old.op_scc)
                and np.allclose(new.ft_sc, old.ft_sc)
                and np.array_equal(new.a_sa, old.a_sa))

    def drop(self):
        """Forget the calculators (after a failure, start clean)."""
        self._gpaw = None
        self._gpaw_atoms = None
        if self._pyscf is not None:
            self._pyscf.reset()

    def compute(self, atoms, code):
        """{"energy", "forces"[, "stress"]} of ``atoms`` in eV, eV/Angstrom, eV/Angstrom^3."""
        s = self.settings
        check_geometry(atoms, s.min_distance, code)
        atoms = atoms.copy()
        atoms.calc = None
        res = {}
        if code == "pyscf":
            atoms.calc = self.pyscf_calculator()
            res["energy"] = float(atoms.get_potential_energy())
            if not s.energy_only:
                res["forces"] = np.array(atoms.get_forces())
        else:
            calc = self.gpaw_calculator(atoms)
            atoms.calc = calc
            self._gpaw_atoms = None          # invalid until this structure succeeds
            atoms.get_potential_energy()
            # the free energy: what the forces and the stress are derivatives of
            res["energy"] = float(calc.get_property("free_energy", atoms))
            if not s.energy_only:
                res["forces"] = np.array(atoms.get_forces())
                if atoms.pbc.all():
                    res["stress"] = np.array(atoms.get_stress(voigt=True))
            self._gpaw_atoms = atoms.copy()
        for k, v in res.items():
            if not np.all(np.isfinite(v)):
                raise FloatingPointError(f"the {k} is not finite")
        return res


# ------------------------------------------------------------------ output
def labelled_frame(atoms, index, res):
    """extxyz text of ``atoms`` with the labels ``res`` (see the module docstring)."""
    import ase.io
    from ase.calculators.calculator import all_properties
    from ase.calculators.singlepoint import SinglePointCalculator
    out = atoms.copy()
    out.calc = None
    ours = {f"{REF}energy", f"{REF}forces", f"{REF}stress", f"{REF}virials", "input_index"}
    for k in list(out.info):
        if k in ours or k in all_properties:
            del out.info[k]
    for k in list(out.arrays):
        if k in ours or k in all_properties:
            del out.arrays[k]
    out.info["input_index"] = int(index)
    out.info[f"{REF}energy"] = res["energy"]
    if "forces" in res:
        out.arrays[f"{REF}forces"] = res["forces"]
    if "stress" in res:
        out.info[f"{REF}stress"] = res["stress"]
        out.info[f"{REF}virials"] = -res["stress"] * out.get_volume()
    out.calc = SinglePointCalculator(out, **res)
    buf = io.StringIO()
    ase.io.write(buf, out, format="extxyz")
    return buf.getvalue().encode("utf-8")


#: output formats and the file extensions that select them
FORMATS = {"extxyz": (".extxyz", ".xyz"), "cfg": (".cfg",)}


def output_format(output_path, fmt=None):
    """``fmt`` if given, else the format the output's extension names
    (``.cfg``: MLIP; anything else: extxyz)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise LabelError(f"unknown output format {fmt!r}: choose {', '.join(FORMATS)}")
        return fmt
    return "cfg" if os.fspath(output_path).lower().endswith(".cfg") else "extxyz"


def cfg_type_map(frames, types=None):
    """Chemical symbols in MLIP type order (type i is ``types[i]``): ``types``
    if given (every element of the input must be in it), else the elements of
    the input by atomic number."""
    from ase.data import atomic_numbers
    present = {s for a in frames for s in a.get_chemical_symbols()}
    if types is None:
        return sorted(present, key=lambda s: atomic_numbers[s])
    types = [t.strip() for t in types if t.strip()]
    bad = [t for t in types if t not in atomic_numbers]
    if bad:
        raise LabelError(f"--cfg-types: {', '.join(bad)} is not a chemical symbol")
    if len(set(types)) != len(types):
        raise LabelError(f"--cfg-types lists an element twice: {','.join(types)}")
    missing = sorted(present - set(types))
    if missing:
        raise LabelError(f"--cfg-types {','.join(types)} lacks {', '.join(missing)}, "
                         "which the input contains")
    return types


def cfg_frame(atoms, index, res, types, xc=None):
    """One MLIP (Moment Tensor Potential) configuration, as text bytes.

    Units eV and Angstrom, MLIP's conventions: ``Supercell`` rows are the
    lattice vectors (periodic structures only); ``AtomData`` holds the 1-based
    id, the integer type (index into ``types``), Cartesian positions and
    forces; ``Energy`` is the total energy; ``PlusStress`` (fully periodic
    cells with a stress) is the virial -stress * volume in eV, in the order
    xx yy zz yz xz xy.  ``Feature`` lines carry the type-to-element map
    (``types 0=Si,1=O``), the input index and the source.
    """
    tindex = {s: i for i, s in enumerate(types)}
    lines = ["BEGIN_CFG", " Size", f"    {len(atoms)}"]
    if atoms.pbc.any():
        lines.append(" Supercell")
        for row in np.asarray(atoms.cell):
            lines.append("    " + " ".join(f"{x:18.12f}" for x in row))
    forces = res.get("forces")
    head = " AtomData:  id type       cartes_x      cartes_y      cartes_z"
    if forces is not None:
        head += "           fx          fy          fz"
    lines.append(head)
    for k, (sym, pos) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
        row = f"    {k + 1:6d} {tindex[sym]:4d} " + " ".join(f"{x:18.12f}" for x in pos)
        if forces is not None:
            row += " " + " ".join(f"{f:18.12f}" for f in forces[k])
        lines.append(row)
    lines += [" Energy", f"    {res['energy']:.12f}"]
    if "stress" in res:
        vir = -np.asarray(res["stress"]) * atoms.get_volume()
        lines.append(" PlusStress:  xx          yy          zz          yz          xz"
                     "          xy")
        lines.append("    " + " ".join(f"{v:18.12f}" for v in vir))
    lines.append(" Feature   types " + ",".join(f"{i}={t}" for i, t in enumerate(types)))
    lines.append(f" Feature   input_index {int(index)}")
    lines.append(" Feature   EFS_by cider-xc")
    if xc:
        lines.append(" Feature   xc " + "".join(str(xc).split()))
    lines.append("END_CFG")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


# ------------------------------------------------------------------ state
def state_path_for(output):
    return os.fspath(output) + ".state.json"


def _save_state(path, state):
    from .io import atomic_path
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())


def _physics(settings, xc):
    from .ase import describe_xc
    from .model import CiderFunctional
    d = settings.todict()
    for k in SOLVER_SETTINGS:
        d.pop(k)
    d["xc_resolved"] = describe_xc(xc)
    d["xc_checksum"] = (xc.header.get("checksum") if isinstance(xc, CiderFunctional)
                        else None)
    return d


def _load_state(path, output, input_path, physics):
    try:
        with open(path) as fh:
            state = json.load(fh)
    except (OSError, ValueError) as err:
        raise LabelError(f"cannot read the state file {path} ({err}); rerun with "
                         "--overwrite to start again") from None
    if state.get("version") != STATE_VERSION or "frames" not in state:
        raise LabelError(f"{path} is not a cider-xc label state file (version "
                         f"{state.get('version')!r}); rerun with --overwrite to start again")
    old = state["settings"]
    diff = {k: (old.get(k), physics.get(k)) for k in sorted(set(old) | set(physics))
            if old.get(k) != physics.get(k)}
    if diff:
        lines = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise LabelError(
            f"{output} was started with other settings ({lines}); refusing to mix "
            "labels from different settings in one file. Rerun with the original "
            "settings to resume, choose another output, or pass --overwrite to start again")
    # the input may have grown (an MD run still appending) but not changed
    size = os.path.getsize(input_path)
    if size < state["input_bytes"] or _sha256(input_path, state["input_bytes"]) != \
            state["input_sha256"]:
        raise LabelError(
            f"the input {input_path} changed since {output} was started (its first "
            f"{state['input_bytes']} bytes no longer match); choose another output or "
            "pass --overwrite to start again")
    return state


# ------------------------------------------------------------------ driver
class _Progress:
    def __init__(self, mode, total, skipped, n_structures):
        self.mode = mode
        self.total = total
        self.count = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if mode == "bar":
            try:
                from tqdm import tqdm
            except ImportError:
                self.mode = "log"
            else:
                self.bar = tqdm(total=total, unit="struct", desc="cider-xc label",
                                dynamic_ncols=True, file=sys.stderr)
        if self.mode == "log":
            print(f"cider-xc label: {n_structures} structures, {skipped} already done, "
                  f"{total} to compute", file=sys.stderr, flush=True)

    def update(self, index, formula, status):
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"#{index} {formula} {status}", refresh=False)
            self.bar.update(1)
        elif self.mode == "log":
            dt = time.perf_counter() - self.t0
            eta = dt / self.count * (self.total - self.count)
            print(f"[{self.count}/{self.total}] structure {index} {formula}: {status} "
                  f"({dt:.1f} s elapsed, ETA {eta:.1f} s)", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def label(input_path, output_path, settings=None, *, retry_failed=False, overwrite=False,
          txt=None, progress="bar", labeller=None, fmt=None, cfg_types=None):
    """Label every structure of ``input_path`` into ``output_path``.

    ``fmt``: "extxyz" or "cfg" (MLIP); None picks by the output's extension
    (``.cfg``: MLIP).  ``cfg_types``: the element of each MLIP type, in order
    (default: the input's elements by atomic number); see :func:`cfg_frame`.

    Returns a :class:`LabelReport`; per-structure failures are recorded there
    and in the state file, and do not stop the run.  ``KeyboardInterrupt``
    stops it with everything computed so far saved; rerunning resumes.
    ``labeller`` replaces the :class:`Labeller` (for tests).
    """
    settings = settings or LabelSettings()
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    frames = read_structures(input_path)
    if os.path.exists(output_path) and os.path.samefile(output_path, input_path):
        raise LabelError("the output must not be the input file")
    codes = [code_for(a, settings.code) for a in frames]
    if settings.code == "pyscf":
        periodic = [i for i, a in enumerate(frames) if a.pbc.any()]
        if periodic:
            raise LabelError(
                f"--code pyscf handles molecules only, but structures {_short(periodic)} "
                "are periodic; use --code gpaw or --code auto (GPAW with "
                "cider_xc.gpaw.CiderXC for periodic cells)")
    if "gpaw" in codes:
        if settings.kpts is None and settings.kpt_density is None:
            raise LabelError(
                f"structures {_short([i for i, c in enumerate(codes) if c == 'gpaw'])} "
                "run in GPAW and need k-points: give --kpts A B C or --kpt-density D")
        try:
            import gpaw  # noqa: F401
        except ImportError:
            raise LabelError("periodic structures need GPAW, which is not installed "
                             "(pip install 'cider-xc[gpaw]')") from None
    try:
        lab = labeller or Labeller(settings, txt=txt)
    except (ValueError, TypeError) as err:
        raise LabelError(f"xc {settings.xc!r}: {err}") from None
    if "pyscf" in codes:
        from .ase import _check_pyscf_xc
        try:
            _check_pyscf_xc(lab.xc)
        except ValueError as err:
            raise LabelError(str(err)) from None
    physics = _physics(settings, lab.xc)
    fmt = output_format(output_path, fmt)
    layout = {"format": fmt}
    if fmt == "cfg":
        layout["cfg_types"] = cfg_type_map(frames, cfg_types)

    spath = state_path_for(output_path)
    if overwrite:
        for p in (output_path, spath):
            if os.path.exists(p):
                os.unlink(p)
    if os.path.exists(spath):
        state = _load_state(spath, output_path, input_path, physics)
        old = {"format": state.get("format", "extxyz"), "cfg_types": state.get("cfg_types")}
        if fmt == "cfg" and cfg_types is None and old["cfg_types"] is not None:
            # keep the types of the first run; elements new to a grown input go last
            types = list(old["cfg_types"])
            types += [t for t in layout["cfg_types"] if t not in types]
            layout["cfg_types"] = types
        if old["format"] != fmt or (fmt == "cfg" and layout["cfg_types"][:len(
                old["cfg_types"] or [])] != old["cfg_types"]):
            raise LabelError(
                f"{output_path} was started as {old['format']}"
                + (f" with types {old['cfg_types']}" if old["cfg_types"] else "")
                + f", not {fmt}" + (f" with types {layout['cfg_types']}" if fmt == "cfg"
                                    else "")
                + "; rerun with the original format, or pass --overwrite to start again")
        if not os.path.exists(output_path):
            raise LabelError(f"the state file {spath} exists but the output {output_path} "
                             "does not; pass --overwrite to start again")
    else:
        if os.path.exists(output_path):
            raise LabelError(f"{output_path} exists and has no state file {spath}; not "
                             "overwriting it (pass --overwrite, or choose another output)")
        state = {"version": STATE_VERSION, "settings": physics, "frames": {},
                 "failed": {}, "output_bytes": 0}
    state.update(layout)
    out = open(output_path, "ab")
    try:
        _lock(out, output_path)
        size = os.path.getsize(output_path)
        if size < state["output_bytes"]:
            raise LabelError(f"{output_path} is shorter ({size} bytes) than its state file "
                             f"records ({state['output_bytes']}); was it edited? pass "
                             "--overwrite to start again")
        if size > state["output_bytes"]:
            # a structure written but not recorded (killed between the two): drop it
            out.truncate(state["output_bytes"])
        return _run(frames, codes, lab, settings, state, spath, out, input_path,
                    output_path, retry_failed, progress)
    finally:
        out.close()


def _lock(fh, path):
    """One label run per output at a time (POSIX advisory lock, freed on exit)."""
    try:
        import fcntl
    except ImportError:       # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise LabelError(f"another cider-xc label run is writing {path}; wait for it "
                         "to finish (or stop it) before starting this one") from None


def _run(frames, codes, lab, settings, state, spath, out, input_path, output_path,
         retry_failed, progress):
    """The loop of :func:`label` over the structures, with the output open and locked."""
    nbytes = os.path.getsize(input_path)
    state.update(input=os.path.abspath(input_path), input_bytes=nbytes,
                 input_sha256=_sha256(input_path, nbytes), n_structures=len(frames),
                 solver={k: getattr(settings, k) for k in SOLVER_SETTINGS},
                 cider_xc_version=_version())
    _save_state(spath, state)

    done = {int(k) for k in state["frames"]}
    failed = {int(k) for k in state["failed"]}
    todo = [i for i in range(len(frames))
            if i not in done and (retry_failed or i not in failed)]
    skipped = len(done)
    bar = _Progress(progress, len(todo), skipped, len(frames))
    computed = []
    try:
        for i in todo:
            atoms = frames[i]
            formula = atoms.get_chemical_formula()
            try:
                res = lab.compute(atoms, codes[i])
            except Exception as err:   # recorded; the run goes on
                lab.drop()
                state["failed"][str(i)] = {
                    "type": type(err).__name__, "message": str(err),
                    "formula": formula, "code": codes[i],
                    "traceback": traceback.format_exc()[-4000:]}
                _save_state(spath, state)
                bar.update(i, formula, f"FAILED ({type(err).__name__})")
                continue
            if state.get("format", "extxyz") == "cfg":
                from .ase import describe_xc
                data = cfg_frame(atoms, i, res, state["cfg_types"], describe_xc(lab.xc))
            else:
                data = labelled_frame(atoms, i, res)
            start = state["output_bytes"]
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            state["frames"][str(i)] = [start, len(data)]
            state["output_bytes"] = start + len(data)
            state["failed"].pop(str(i), None)
            _save_state(spath, state)
            computed.append(i)
            bar.update(i, formula, f"E = {res['energy']:.6f} eV")
    finally:
        bar.close()

    reordered = False
    pending = [i for i in range(len(frames))
               if str(i) not in state["frames"] and str(i) not in state["failed"]]
    if not pending:
        reordered = _put_in_order(output_path, spath, state)
    return LabelReport(output=output_path, state_path=spath, n_structures=len(frames),
                       done=sorted(int(k) for k in state["frames"]),
                       failed={int(k): v for k, v in sorted(state["failed"].items(),
                                                            key=lambda kv: int(kv[0]))},
                       computed=computed, skipped=skipped, reordered=reordered)


def _put_in_order(output_path, spath, state):
    """Rewrite the output in input order if a retry appended out of order."""
    from .io import atomic_path
    items = sorted(((int(k), v) for k, v in state["frames"].items()), key=lambda kv: kv[0])
    starts = [v[0] for _, v in items]
    if starts == sorted(starts):
        return False
    with open(output_path, "rb") as fh:
        blob = fh.read()
    new_frames, pos, parts = {}, 0, []
    for i, (start, length) in items:
        parts.append(blob[start:start + length])
        new_frames[str(i)] = [pos, length]
        pos += length
    with atomic_path(output_path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"".join(parts))
            fh.flush()
            os.fsync(fh.fileno())
    state["frames"] = new_frames
    state["output_bytes"] = pos
    _save_state(spath, state)
    return True


def _short(indices, n=8):
    s = ", ".join(str(i) for i in indices[:n])
    return s + (f", ... ({len(indices)} in all)" if len(indices) > n else "")


def _version():
    from . import __version__
    return __version__


def summary(report):
    """Human-readable end-of-run summary."""
    lines = [f"cider-xc label: {len(report.done)}/{report.n_structures} structures labelled "
             f"({len(report.computed)} in this run, {report.skipped} from before) -> "
             f"{report.output}"]
    if report.reordered:
        lines.append("  (retried structures moved back into input order)")
    if report.failed:
        lines.append(f"  {len(report.failed)} FAILED (recorded in {report.state_path}; "
                     "rerun with --retry-failed to try them again):")
        for i, f in report.failed.items():
            msg = f["message"].strip().splitlines()[0] if f["message"].strip() else ""
            lines.append(f"    structure {i} ({f['formula']}, {f['code']}): "
                         f"{f['type']}: {msg[:300]}")
    return "\n".join(lines)
