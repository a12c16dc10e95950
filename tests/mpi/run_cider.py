"""Run one small CiderXC calculation and print energy, forces and stress as
JSON (eV, eV/A, eV/A^3) on rank 0.  Used by tests/test_gpaw_mpi.py, serially
and under ``mpiexec -n N``.

    python run_cider.py SYSTEM PARALLEL_JSON [PAW_FEATURES or GPAW XC name]
"""
import json
import sys

import numpy as np
from ase.build import bulk
from gpaw import GPAW, PW, FermiDirac
from gpaw.mpi import world

import cider_xc
from cider_xc.gpaw import CiderXC


def system(name):
    if name == "si":
        si = bulk("Si", "diamond", 5.43)
        # no symmetry left: nonzero forces and a full stress tensor
        si.set_cell(si.cell @ np.array([[1.02, 0, 0.03], [0, 0.99, -0.02],
                                        [0.2, -0.01, 1.03]]), scale_atoms=True)
        si.positions[1] += [0.05, -0.03, 0.02]
        return si, dict(kpts=(2, 2, 2), mode=PW(180), occupations=FermiDirac(0.05),
                        convergence={"energy": 1e-9, "density": 1e-8, "eigenstates": 1e-12})
    if name == "si8":
        # cubic cell, full symmetry: symmetry-equivalent atoms reuse a
        # representative's on-site terms (on several domain ranks: among
        # the atoms each rank owns)
        si = bulk("Si", "diamond", 5.43, cubic=True)
        return si, dict(kpts=(1, 1, 1), mode=PW(150),
                        convergence={"energy": 1e-9, "density": 1e-8, "eigenstates": 1e-12})
    if name == "fe":
        fe = bulk("Fe", "bcc", 2.87)
        fe.set_initial_magnetic_moments([2.3])
        return fe, dict(kpts=(2, 2, 2), mode=PW(150), spinpol=True,
                        occupations=FermiDirac(0.1),
                        convergence={"energy": 1e-8, "density": 1e-6, "eigenstates": 1e-10})
    raise ValueError(name)


def main():
    name, parallel = sys.argv[1], json.loads(sys.argv[2])
    paw_features = sys.argv[3] if len(sys.argv) > 3 else "nonlocal"
    atoms, kw = system(name)
    if paw_features in ("nonlocal", "local"):
        xc = CiderXC(cider_xc.load_model("test-nl"), paw_features=paw_features)
    else:
        xc = paw_features                    # a GPAW functional, for comparison
    atoms.calc = GPAW(xc=xc, legacy_gpaw=True, txt=None, parallel=parallel, **kw)
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress(voigt=False)
    calc = atoms.calc
    layout = {"world": world.size, "domain": calc.wfs.gd.comm.size,
              "kpt": calc.wfs.kd.comm.size, "band": calc.wfs.bd.comm.size}
    # which atoms' PAW radial data each rank holds (paw_features='nonlocal')
    paw = getattr(getattr(calc.hamiltonian, "xc", None), "last_paw", None)
    owned = np.zeros((world.size, len(atoms)))
    if paw is not None:
        owned[world.rank, [at.a for at in paw.atoms]] = 1.0
    world.sum(owned)
    if world.rank == 0:
        print("RESULT " + json.dumps({"energy": e, "forces": f.tolist(), "stress": s.tolist(),
                                      "layout": layout, "paw_owned": owned.tolist()}))


if __name__ == "__main__":
    main()
