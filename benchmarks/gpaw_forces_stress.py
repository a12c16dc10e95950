"""GPAW forces and stress with CiderXC against finite differences.

Systems (2-atom Si, PW(250 eV), 2x2x2 k-points, Fermi-Dirac 0.01 eV, tight
SCF: energy 1e-10 eV/electron, density 1e-9; GPAW's legacy calculator):

* ``Si``: diamond Si at a = 5.43 Angstrom, atom 1 displaced by
  (0.05, -0.03, 0.02) Angstrom so the forces are not zero by symmetry;
* ``distorted``: the same in a sheared, strained cell (GPAW's own
  distorted-Si stress test cell).

Forces: central differences of the SCF energy with 0.002 Angstrom steps for
every component of atom 1; stress: central differences under symmetric
strains eps_ij = eps_ji = h/2 (h = 3e-5) for all six components,
sigma_ij = (1/V) dE/d eps_ij, and for the diagonal ones also second-order
forward differences (strains 0, h, 2h).  Why both: in the ideal ``Si`` cell
GPAW's energy has a small step between eps_xx = -2e-6 and 0 for any
functional (PBE: 1e-5 eV; at the PBE density the CIDER XC-energy difference
steps by 2.6e-4 eV at the same place; not the plane-wave count, the grid or
symmetry: measured with PW(cell=...), symmetry='off'), so central
differences straddling eps = 0 are spoiled there.  Reference errors of GPAW's built-in TPSS
meta-GGA (same settings) are measured in the same run for comparison.
Goals: forces 1e-3 eV/Angstrom, stress 1e-4 eV/Angstrom^3.

Run:  NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/gpaw_forces_stress.py
"""
import argparse
import time

import numpy as np
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces
from gpaw import GPAW, PW, FermiDirac, Mixer

from _report import write_report
from cider_xc.gpaw import CiderXC

DISTORTION = np.array([[1.02, 0, 0.03], [0, 0.99, -0.02], [0.2, -0.01, 1.03]])
PAIRS = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def system(name, xc):
    si = bulk("Si", "diamond", 5.43)
    if name == "distorted":
        si.set_cell(si.cell @ DISTORTION, scale_atoms=True)
    si.positions[1] += [0.05, -0.03, 0.02]
    si.calc = GPAW(mode=PW(250), xc=xc, kpts=(2, 2, 2), txt=None,
                   occupations=FermiDirac(0.01), mixer=Mixer(0.7, 5, 50.0),
                   convergence={"energy": 1e-10, "density": 1e-9, "eigenstates": 1e-14},
                   legacy_gpaw=True)
    return si


def strain_energy(si, i, j, h):
    cell0 = si.cell.copy()
    eps = np.zeros((3, 3))
    eps[i, j] += h / 2
    eps[j, i] += h / 2
    si.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=True)
    try:
        return si.get_potential_energy()
    finally:
        si.set_cell(cell0, scale_atoms=True)


def check(name, xcname, h=3e-5):
    si = system(name, CiderXC() if xcname == "CIDER" else xcname)
    t0 = time.perf_counter()
    si.get_potential_energy()
    t_scf = time.perf_counter() - t0
    t0 = time.perf_counter()
    F = si.get_forces()
    t_f = time.perf_counter() - t0
    t0 = time.perf_counter()
    S = si.get_stress(voigt=False)
    t_s = time.perf_counter() - t0
    fd_f = calculate_numerical_forces(si, 0.002, [1], [0, 1, 2])[0]
    V = si.get_volume()
    e0 = si.get_potential_energy()
    fd_s, fwd_s = [], []
    for i, j in PAIRS:
        ep, em = strain_energy(si, i, j, h), strain_energy(si, i, j, -h)
        fd_s.append((ep - em) / (2 * h * V))
        if i == j:   # second-order forward difference: does not straddle eps = 0
            e2 = strain_energy(si, i, j, 2 * h)
            fwd_s.append((-3 * e0 + 4 * ep - e2) / (2 * h * V))
        else:
            fwd_s.append(fd_s[-1])
    fd_s, fwd_s = np.array(fd_s), np.array(fwd_s)
    ana_s = np.array([S[i, j] for i, j in PAIRS])
    return {"system": name, "xc": xcname, "forces": F[1].tolist(), "forces_fd": fd_f.tolist(),
            "force_err": float(np.abs(fd_f - F[1]).max()),
            "stress_voigt": ana_s.tolist(), "stress_fd_voigt": fd_s.tolist(),
            "stress_err": float(np.abs(fd_s - ana_s).max()),
            "stress_err_voigt": (fd_s - ana_s).tolist(),
            "stress_fwd_voigt": fwd_s.tolist(),
            "stress_fwd_err": float(np.abs(fwd_s - ana_s).max()),
            "stress_fwd_err_voigt": (fwd_s - ana_s).tolist(),
            "t_scf": t_scf, "t_forces": t_f, "t_stress": t_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results_gpaw_forces_stress")
    ap.add_argument("--xc", nargs="+", default=["CIDER", "TPSS"])
    args = ap.parse_args()
    rows = []
    lines = []
    for name in ("Si", "distorted"):
        for xc in args.xc:
            r = check(name, xc)
            rows.append(r)
            print(f"{name:10s} {xc:6s} max |F - F_fd| {r['force_err']:.2e} eV/A, "
                  f"max |sigma - sigma_fd| {r['stress_err']:.2e} (central), "
                  f"{r['stress_fwd_err']:.2e} (forward) eV/A^3", flush=True)
            write_report(args.out, {"results": rows}, lines, final=False)
    lines.append("GPAW forces/stress vs finite differences (Si2, PW 250 eV, 2x2x2 k)")
    lines.append(f"{'system':10s} {'xc':6s} {'max dF (eV/A)':>14s} {'dsigma central':>15s}"
                 f" {'dsigma forward':>15s} {'t_SCF':>7s} {'t_F':>6s} {'t_sigma':>8s}")
    for r in rows:
        lines.append(f"{r['system']:10s} {r['xc']:6s} {r['force_err']:14.2e} "
                     f"{r['stress_err']:15.2e} {r['stress_fwd_err']:15.2e} {r['t_scf']:7.1f} "
                     f"{r['t_forces']:6.2f} {r['t_stress']:8.2f}")
    lines.append("stress errors per Voigt component (xx yy zz yz xz xy), eV/A^3, "
                 "central / forward (diagonal) differences:")
    for r in rows:
        lines.append(f"  {r['system']:10s} {r['xc']:6s} " +
                     " ".join(f"{x:+.1e}" for x in r["stress_err_voigt"]) + "  /  " +
                     " ".join(f"{x:+.1e}" for x in r["stress_fwd_err_voigt"][:3]))
    lines.append("goals: forces 1e-3 eV/A, stress 1e-4 eV/A^3")
    write_report(args.out, {"results": rows}, lines, final=True)


if __name__ == "__main__":
    main()
