"""Systems to compute reference data for: named sets, list files, geometries.

A *spec* is one of

* ``atoms:H-Ar`` (or ``atoms:H,He,Li``): free atoms in their ground-state spin;
* ``g2_1`` / ``g2_2``: the molecules of ASE's G2 collections (atoms excluded);
* ``g2_1:NAME`` / ``g2_2:NAME``: one molecule of a collection;
* a path to a geometry file readable by ASE (charge and spin from
  ``atoms.info`` keys ``charge``/``spin`` (2S), else neutral, lowest spin);
  a multi-frame ``.extxyz`` file is a set: one system per frame, named by
  its ``name`` info key;
* a path ending in ``.txt``: a list file, one spec per line, ``#`` comments.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ase.data import atomic_numbers, chemical_symbols

# ground-state 2S of the free atoms H..Xe (Hund's rule, experimental
# configurations: Cr 3d5 4s1, Cu 3d10 4s1, Nb 4d4 5s1, Mo 4d5 5s1, Ru 4d7 5s1,
# Rh 4d8 5s1, Pd 4d10, Ag 4d10 5s1)
ATOM_SPIN = {"H": 1, "He": 0, "Li": 1, "Be": 0, "B": 1, "C": 2, "N": 3, "O": 2, "F": 1,
             "Ne": 0, "Na": 1, "Mg": 0, "Al": 1, "Si": 2, "P": 3, "S": 2, "Cl": 1, "Ar": 0,
             "K": 1, "Ca": 0, "Sc": 1, "Ti": 2, "V": 3, "Cr": 6, "Mn": 5, "Fe": 4, "Co": 3,
             "Ni": 2, "Cu": 1, "Zn": 0, "Ga": 1, "Ge": 2, "As": 3, "Se": 2, "Br": 1, "Kr": 0,
             "Rb": 1, "Sr": 0, "Y": 1, "Zr": 2, "Nb": 5, "Mo": 6, "Tc": 5, "Ru": 4, "Rh": 3,
             "Pd": 0, "Ag": 1, "Cd": 0, "In": 1, "Sn": 2, "Sb": 3, "Te": 2, "I": 1, "Xe": 0}

#: the def2 basis sets put an effective core potential on elements beyond Kr
ECP_MIN_Z = 37


def ecp_for(symbols, basis):
    """PySCF ``ecp`` argument for ``basis``: the def2 ECPs on Rb and heavier
    elements when basis is a def2 basis (the def2 basis of those elements is
    made for its ECP, so an all-electron run would be meaningless), else None."""
    if not (isinstance(basis, str) and basis.lower().replace("-", "").startswith("def2")):
        return None
    heavy = sorted({s for s in symbols if atomic_numbers[s] >= ECP_MIN_Z})
    return {s: basis for s in heavy} or None


class SystemError_(ValueError):
    """A system spec or geometry that cannot be used (names the source)."""


@dataclasses.dataclass
class System:
    name: str
    symbols: list
    positions: np.ndarray          # Angstrom
    charge: int = 0
    spin: int = 0                  # 2S
    source: str = ""

    @property
    def is_atom(self):
        return len(self.symbols) == 1

    def to_mol(self, basis, verbose=0):
        """PySCF molecule; an element missing from the basis is a clear error."""
        from pyscf import gto
        atom = [(s, tuple(p)) for s, p in zip(self.symbols, self.positions)]
        try:
            return gto.M(atom=atom, basis=basis, ecp=ecp_for(self.symbols, basis),
                         charge=self.charge, spin=self.spin, unit="Angstrom",
                         verbose=verbose)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise SystemError_(f"{self.name} ({self.source}): cannot build the molecule "
                               f"with basis {basis!r}: {exc}") from None

    @property
    def atoms_key(self):
        return tuple(sorted(self.symbols))


def _g2(collection):
    if collection == "g2_1":
        from ase.data import g2_1 as mod
    elif collection == "g2_2":
        from ase.data import g2_2 as mod
    else:
        raise SystemError_(f"unknown collection {collection!r}")
    return mod


def _symbols(entry):
    sym = entry["symbols"]
    if isinstance(sym, str):
        from ase.symbols import string2symbols
        return string2symbols(sym)
    return list(sym)


def g2_molecule_names(collection):
    """Molecule names of a G2 collection (free atoms excluded)."""
    mod = _g2(collection)
    return [n for n in mod.data if len(_symbols(mod.data[n])) > 1]


def g2_system(collection, name):
    mod = _g2(collection)
    if name not in mod.data:
        raise SystemError_(f"{name!r} is not in ASE's {collection}")
    d = mod.data[name]
    symbols = _symbols(d)
    magmoms = d.get("magmoms") or [0] * len(symbols)
    spin = int(round(abs(sum(magmoms))))
    return System(name, symbols, np.array(d["positions"], dtype=float), 0, spin,
                  f"ase.data.{collection}")


def atom_system(symbol):
    if symbol not in ATOM_SPIN:
        raise SystemError_(f"no ground-state spin known for atom {symbol!r} (H..Xe only)")
    return System(symbol, [symbol], np.zeros((1, 3)), 0, ATOM_SPIN[symbol], "atoms")


def _atom_range(spec):
    body = spec.split(":", 1)[1]
    if "-" in body:
        a, b = body.split("-")
        za, zb = atomic_numbers[a.strip()], atomic_numbers[b.strip()]
        return [chemical_symbols[z] for z in range(za, zb + 1)]
    return [s.strip() for s in body.split(",") if s.strip()]


def _frame_system(at, name, source):
    if len(at) == 0:
        raise SystemError_(f"{source}: the geometry {name!r} has no atoms")
    charge = int(at.info.get("charge", 0))
    z = int(sum(at.numbers)) - charge
    spin = int(at.info.get("spin", z % 2))
    if spin < 0 or (z - spin) % 2:
        raise SystemError_(f"{source}: {name!r} has {z} electrons, which cannot have "
                           f"2S = {spin}")
    return System(name, at.get_chemical_symbols(), at.positions.copy(), charge, spin, source)


def from_file(path):
    """Systems of a geometry file: one, or one per frame of a multi-frame
    extxyz file (each frame needs a distinct ``name`` info key)."""
    import ase.io
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises many kinds
        raise SystemError_(f"{path}: cannot read geometry ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise SystemError_(f"{path}: the file holds no geometry")
    if len(frames) == 1 and "name" not in frames[0].info:
        return [_frame_system(frames[0], os.path.splitext(os.path.basename(path))[0], path)]
    names = [at.info.get("name") for at in frames]
    if None in names or len(set(names)) != len(names):
        raise SystemError_(f"{path}: every frame of a multi-frame geometry file needs a "
                           "distinct 'name' in its info line")
    return [_frame_system(at, str(n), path) for at, n in zip(frames, names)]


def resolve(specs):
    """Expand a spec or a list of specs into Systems (unique names kept in order)."""
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for spec in specs:
        spec = str(spec).strip()
        if not spec or spec.startswith("#"):
            continue
        if spec.startswith("atoms:"):
            out += [atom_system(s) for s in _atom_range(spec)]
        elif spec in ("g2_1", "g2_2"):
            out += [g2_system(spec, n) for n in g2_molecule_names(spec)]
        elif spec.startswith(("g2_1:", "g2_2:")):
            coll, name = spec.split(":", 1)
            out.append(g2_system(coll, name))
        elif spec.endswith(".txt"):
            if not os.path.isfile(spec):
                raise SystemError_(f"{spec}: no such list file")
            base = os.path.dirname(os.path.abspath(spec))
            lines = []
            for line in open(spec):
                line = line.split("#", 1)[0].strip()
                if line:
                    cand = os.path.join(base, line)
                    lines.append(cand if os.path.exists(cand) else line)
            out += resolve(lines)
        elif os.path.exists(spec):
            out += from_file(spec)
        else:
            raise SystemError_(f"unknown system spec {spec!r} (not a named set, list file "
                               "or existing geometry file)")
    seen, uniq = set(), []
    for s in out:
        if s.name not in seen:
            seen.add(s.name)
            uniq.append(s)
    return uniq
