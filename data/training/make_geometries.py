"""Writes the geometry sets of data/training/*.extxyz (run from anywhere:
``python data/training/make_geometries.py``).

Geometries are experimental bond lengths and angles (rounded; Angstrom,
degrees) in idealised point-group symmetry, or deliberately stretched /
compressed versions of them (non-equilibrium densities).  Each frame carries
``name``, ``charge`` and ``spin`` (2S) in its info line.  The sets named
``heldout-*`` are validation data: no system of theirs may appear in a
training list (tests/test_training.py checks this).
"""
import math
import os

import numpy as np
from ase import Atoms
from ase.io import write

HERE = os.path.dirname(os.path.abspath(__file__))


def diatomic(a, b, r):
    return [a, b], [(0, 0, 0), (0, 0, r)]


def linear3(c, x, r):
    return [c, x, x], [(0, 0, 0), (0, 0, r), (0, 0, -r)]


def bent(c, x, r, angle):
    h = math.radians(angle) / 2
    return [c, x, x], [(0, 0, 0), (r * math.sin(h), 0, r * math.cos(h)),
                       (-r * math.sin(h), 0, r * math.cos(h))]


def pyramidal(c, x, r, angle):
    """XY3 (C3v) with Y-X-Y angle."""
    sb = math.sqrt((1 - math.cos(math.radians(angle))) / 1.5)
    cb = math.sqrt(1 - sb * sb)
    pos = [(0, 0, 0)] + [(r * sb * math.cos(p), r * sb * math.sin(p), -r * cb)
                         for p in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return [c, x, x, x], pos


def planar3(c, x, r):
    return [c, x, x, x], [(0, 0, 0)] + [(r * math.cos(p), r * math.sin(p), 0)
                                        for p in (0, 2 * math.pi / 3, 4 * math.pi / 3)]


def tetrahedral(c, x, r):
    d = r / math.sqrt(3)
    return [c] + [x] * 4, [(0, 0, 0), (d, d, d), (d, -d, -d), (-d, d, -d), (-d, -d, d)]


def methyl_x(x, rcx, rch=1.084, angle=107.7):
    """CH3X (C3v) with H-C-X angle."""
    t = math.radians(angle)
    pos = [(0, 0, 0), (0, 0, rcx)] + [(rch * math.sin(t) * math.cos(p),
                                        rch * math.sin(t) * math.sin(p), rch * math.cos(t))
                                       for p in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    return ["C", x, "H", "H", "H"], pos


def atom(sym):
    return [sym], [(0, 0, 0)]


def ammonium(r=1.021):
    s, p = tetrahedral("N", "H", r)
    return s, p


SETS = {
    # molecules with K-Kr elements (all-electron in def2 bases)
    "heavy-train": [
        ("KH", diatomic("K", "H", 2.240), 0, 0),
        ("KCl", diatomic("K", "Cl", 2.667), 0, 0),
        ("CaCl2", linear3("Ca", "Cl", 2.483), 0, 0),
        ("ScCl3", planar3("Sc", "Cl", 2.290), 0, 0),
        ("TiCl4", tetrahedral("Ti", "Cl", 2.170), 0, 0),
        ("CuH", diatomic("Cu", "H", 1.463), 0, 0),
        ("CuCl", diatomic("Cu", "Cl", 2.051), 0, 0),
        ("ZnCl2", linear3("Zn", "Cl", 2.072), 0, 0),
        ("GaCl3", planar3("Ga", "Cl", 2.099), 0, 0),
        ("GeH4", tetrahedral("Ge", "H", 1.525), 0, 0),
        ("AsH3", pyramidal("As", "H", 1.511, 92.1), 0, 0),
        ("SeH2", bent("Se", "H", 1.460, 90.6), 0, 0),
        ("Br2", diatomic("Br", "Br", 2.281), 0, 0),
        ("BrCl", diatomic("Br", "Cl", 2.136), 0, 0),
        ("KrF2", linear3("Kr", "F", 1.889), 0, 0),
    ],
    "heldout-heavy": [
        ("HBr", diatomic("H", "Br", 1.414), 0, 0),
        ("FeCl3", planar3("Fe", "Cl", 2.140), 0, 5),
        ("ZnH2", linear3("Zn", "H", 1.524), 0, 0),
        ("KF", diatomic("K", "F", 2.171), 0, 0),
        ("CH3Br", methyl_x("Br", 1.934, 1.082), 0, 0),
        ("GeCl4", tetrahedral("Ge", "Cl", 2.113), 0, 0),
        ("AsF3", pyramidal("As", "F", 1.706, 96.2), 0, 0),
    ],
    # elements with def2 effective core potentials (Rb-Xe): valence densities
    "ecp-train": [
        ("SbH3", pyramidal("Sb", "H", 1.704, 91.6), 0, 0),
        ("TeH2", bent("Te", "H", 1.658, 90.3), 0, 0),
        ("ICl", diatomic("I", "Cl", 2.321), 0, 0),
        ("RbCl", diatomic("Rb", "Cl", 2.787), 0, 0),
        ("InCl", diatomic("In", "Cl", 2.401), 0, 0),
        ("AgCl", diatomic("Ag", "Cl", 2.281), 0, 0),
        ("CdCl2", linear3("Cd", "Cl", 2.284), 0, 0),
        ("XeF2", linear3("Xe", "F", 1.977), 0, 0),
        ("IBr", diatomic("I", "Br", 2.469), 0, 0),
    ],
    "heldout-ecp": [
        ("HI", diatomic("H", "I", 1.609), 0, 0),
        ("I2", diatomic("I", "I", 2.666), 0, 0),
        ("CH3I", methyl_x("I", 2.132), 0, 0),
        ("SnH4", tetrahedral("Sn", "H", 1.711), 0, 0),
        ("SbCl3", pyramidal("Sb", "Cl", 2.333, 97.2), 0, 0),
    ],
    # ions and non-equilibrium (stretched / compressed) densities
    "ions-stretched-train": [
        ("F-", atom("F"), -1, 0),
        ("O-", atom("O"), -1, 1),
        ("Na+", atom("Na"), 1, 0),
        ("K+", atom("K"), 1, 0),
        ("OH-", diatomic("O", "H", 0.964), -1, 0),
        ("NH4+", ammonium(), 1, 0),
        ("H2_r1.1", diatomic("H", "H", 1.10), 0, 0),
        ("N2_r1.3", diatomic("N", "N", 1.30), 0, 0),
        ("HF_r1.2", diatomic("H", "F", 1.20), 0, 0),
        ("CO_r1.4", diatomic("C", "O", 1.40), 0, 0),
        ("H2O_r0.85", bent("O", "H", 0.85, 104.5), 0, 0),
    ],
    "heldout-ions-stretched": [
        ("Cl-", atom("Cl"), -1, 0),
        ("Li+", atom("Li"), 1, 0),
        ("SH-", diatomic("S", "H", 1.345), -1, 0),
        ("H2O_r1.3", bent("O", "H", 1.30, 104.5), 0, 0),
        ("N2_r1.5", diatomic("N", "N", 1.50), 0, 0),
        ("Cl2_r2.4", diatomic("Cl", "Cl", 2.40), 0, 0),
    ],
}


def main():
    for name, systems in SETS.items():
        frames = []
        for label, (symbols, positions), charge, spin in systems:
            at = Atoms(symbols, positions=np.array(positions, dtype=float))
            at.info.update(name=label, charge=charge, spin=spin)
            frames.append(at)
        path = os.path.join(HERE, name + ".extxyz")
        write(path, frames, format="extxyz")
        print(f"{path}: {len(frames)} systems")


if __name__ == "__main__":
    main()
