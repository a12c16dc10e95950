"""Consistency of the GPAW and PySCF plugins: CIDER-minus-PBE atomization energies.

For H2O, CO and N2 (ASE g2 geometries) the atomization energy with the CIDER
functional minus that with PBE is computed at the PBE densities (the
first-order change E_xc^CIDER[n_PBE] - E_xc^PBE[n_PBE] of every system; the
self-consistent change differs at second order)

* in GPAW: plane waves, PAW, molecule and atoms in a large cubic box
  (spin-polarised atoms with Hund's-rule moments and integer occupations,
  symmetry off so that C and O keep the non-spherical density that PySCF's
  UKS atoms have), CiderXC vs GPAW's PBE
  through the same (legacy) code path;
* in PySCF: cc-pCV5Z (cc-pV5Z on H), grid level 4, density fitting, UKS
  for the atoms.  A core-valence basis is needed: CIDER - PBE depends on
  the core density (the features are integrals of the whole density), and
  the atomization energy still moves by 1.3 kcal/mol from def2-QZVP to
  cc-pCV5Z (0.5 from cc-pCVQZ to cc-pCV5Z).

Why at the PBE density: GPAW's meta-GGA SCF of isolated atoms in a box with
CiderXC does not converge reliably (the alpha descriptor of the noisy
plane-wave pseudo-density tails; see the README), while the comparison of
the functional itself (same density in, energy out) is what this checks.

The difference of the two codes measures the PAW/plane-wave treatment of the
nonlocal features against the all-electron molecular one, for the
PAW-consistent features (paw_features='nonlocal', the default) and, for
comparison, the local features on site.  Goal: within
1 kcal/mol.

    .venv/bin/python benchmarks/gpaw_pyscf_consistency.py [--ecut 900] [--box 11]
        [--basis cc-pcvqz] [--pyscf-from FILE] [--gpaw-from FILE]

Writes benchmarks/results_gpaw_pyscf_consistency.json.

With ``--scf`` the CIDER energies are self-consistent in both codes instead
(plain GPAW SCF with ``CiderXC()``, plain ``mf.kernel()`` in PySCF), PBE's
too; written to results_gpaw_pyscf_consistency_scf.json by default.  The PBE
energies can be reused from a PBE-density run (``--gpaw-from``,
``--pyscf-from``: they are the same PBE SCFs).

With ``--relaxation`` the self-consistent comparison is assembled as first
order plus relaxation: the PBE-density numbers of ``--first-order`` (at the
converged 900 eV / 11 A / cc-pCV5Z settings) plus, per code, the SCF
relaxation E_CIDER[n_CIDER] - E_CIDER[n_PBE] of every system at cheaper
settings (``--ecut``, ``--box``, ``--basis``; a second-order quantity, so
much less sensitive to them; run it at two settings to see how much).  Plain
GPAW and plain ``mf.kernel()`` SCFs.  Written to
results_gpaw_pyscf_consistency_relaxation.json/.txt by default.

    .venv/bin/python benchmarks/gpaw_pyscf_consistency.py --relaxation \
        --ecut 500 --box 7 --basis cc-pcvqz
"""
import argparse
import json
import os
import time

import numpy as np

EV_TO_KCAL = 23.060547830619
HARTREE_TO_KCAL = 627.5094740631
MOLECULES = ["H2O", "CO", "N2"]
MAGMOM = {"H": 1, "C": 2, "N": 3, "O": 2}
# GPAW treatments of the nonlocal features in the PAW spheres
VARIANTS = {"gpaw": {"paw_features": "nonlocal"},          # PAW-consistent (grid-interpolated)
            "gpaw_local": {"paw_features": "local"},       # local features on site
            "gpaw_onsite_pbe": {"paw_features": "local", "onsite": "pbe"}}  # PBE x on site


def gpaw_setup(symbols, positions, ecut, box, log):
    """The system in its box and the GPAW settings every run here shares."""
    from ase import Atoms
    from gpaw import PW, FermiDirac
    atoms = Atoms(symbols, positions=positions, cell=[box, box, box], pbc=True)
    atoms.center()
    kw = dict(mode=PW(ecut), kpts=(1, 1, 1), txt=log, legacy_gpaw=True, maxiter=400,
              convergence={"energy": 1e-6, "density": 1e-5})
    if len(symbols) == 1:
        # symmetry off: the p shell of C and O is partly filled, and GPAW's
        # cubic symmetrisation would average it into a spherical density;
        # PySCF's UKS atom has integer occupations of one orientation
        kw.update(hund=True, spinpol=True, occupations=FermiDirac(0.0, fixmagmom=True),
                  symmetry="off")
    else:
        kw.update(occupations=FermiDirac(0.0))
    return atoms, kw


def gpaw_energy(symbols, positions, ecut, box, log):
    """PBE energy and the CIDER - PBE XC-energy difference at the PBE density (eV)."""
    from gpaw import GPAW
    from cider_xc.gpaw import CiderXC
    atoms, kw = gpaw_setup(symbols, positions, ecut, box, log)
    atoms.calc = GPAW(xc="PBE", **kw)
    e = atoms.get_potential_energy()
    return e, {variant: atoms.calc.get_xc_difference(CiderXC(**vkw))
               for variant, vkw in VARIANTS.items()}


def gpaw_scf_energy(symbols, positions, ecut, box, log):
    """Self-consistent CIDER energy (eV): plain GPAW with CiderXC(), the same
    settings as :func:`gpaw_energy`."""
    from gpaw import GPAW
    from cider_xc.gpaw import CiderXC
    atoms, kw = gpaw_setup(symbols, positions, ecut, box, log)
    atoms.calc = GPAW(xc=CiderXC(), **kw)
    e = atoms.get_potential_energy()
    if not atoms.calc.scf.converged:
        raise RuntimeError(f"GPAW CIDER SCF of {symbols} did not converge")
    return e, atoms.calc.scf.niter


def pyscf_basis(name):
    """Core-valence sets (cc-pCVnZ) do not exist for H: it gets cc-pVnZ."""
    if "pcv" in name.lower():
        return {"H": name.lower().replace("pcv", "pv"), "default": name}
    return name


def pyscf_ks(symbols, positions, basis):
    """A density-fitted UKS (atoms, Hund's-rule spin) or RKS object on grid
    level 4, the settings every PySCF run here shares."""
    from pyscf import dft, gto
    spin = MAGMOM[symbols[0]] if len(symbols) == 1 else 0
    mol = gto.M(atom=list(zip(symbols, map(tuple, positions))), basis=pyscf_basis(basis),
                spin=spin, verbose=0)
    mf = (dft.UKS if spin else dft.RKS)(mol).density_fit()
    mf.grids.level = 4
    mf.conv_tol = 1e-9
    return mf


def pyscf_scf_energy(symbols, positions, basis):
    """Self-consistent CIDER energy (Ha) with plain mf.kernel()."""
    import cider_xc
    mf = pyscf_ks(symbols, positions, basis)
    mf.xc = cider_xc.load()
    e = mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"PySCF CIDER SCF of {symbols} did not converge")
    return e


def pyscf_energy(symbols, positions, basis):
    """PBE energy and the CIDER - PBE energy difference at the PBE density (Ha)."""
    import cider_xc
    from cider_xc.pyscf import fallback
    mf = pyscf_ks(symbols, positions, basis)
    mf.xc = "PBE"
    e, _ = fallback.kernel(mf)
    if not mf.converged:
        raise RuntimeError(f"PySCF PBE SCF of {symbols} did not converge")
    dm = mf.make_rdm1()
    mfc = pyscf_ks(symbols, positions, basis)
    mfc.xc = cider_xc.load()
    return e, mfc.energy_tot(dm) - e


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ecut", type=float, default=900.0, help="plane-wave cutoff, eV")
    ap.add_argument("--box", type=float, default=11.0, help="cubic box edge, Angstrom")
    ap.add_argument("--basis", default="cc-pcv5z")
    ap.add_argument("--molecules", nargs="*", default=MOLECULES)
    ap.add_argument("--pyscf-from", default=None,
                    help="take the PySCF energies from an earlier results file "
                         "(same basis) instead of recomputing them")
    ap.add_argument("--gpaw-from", default=None,
                    help="take the GPAW energies (all variants) from an earlier results "
                         "file (same cutoff and box) instead of recomputing them")
    ap.add_argument("--scf", action="store_true",
                    help="self-consistent CIDER energies in both codes")
    ap.add_argument("--relaxation", action="store_true",
                    help="SCF relaxation energies E_CIDER[n_CIDER] - E_CIDER[n_PBE] in both "
                         "codes (at --ecut/--box and --basis), added to the PBE-density "
                         "comparison of --first-order")
    ap.add_argument("--first-order", default=None,
                    help="with --relaxation: the PBE-density results file (default: "
                         "results_gpaw_pyscf_consistency.json)")
    ap.add_argument("--relaxation-from", default=None,
                    help="with --relaxation: take the relaxation energies from an earlier "
                         "results file of this mode (same model, settings) and only "
                         "recombine them with --first-order")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "results_gpaw_pyscf_consistency"
                                + ("_scf" if args.scf else "")
                                + ("_relaxation" if args.relaxation else "") + ".json")
    import cider_xc
    # the model every CIDER number here comes from (results of different
    # models must not be combined)
    args.model_checksum = cider_xc.load().header.get("checksum", "")
    from ase.build import molecule
    mols = {m: molecule(m) for m in args.molecules}
    atoms = sorted({s for m in mols.values() for s in m.get_chemical_symbols()})
    systems = {a: ([a], np.zeros((1, 3))) for a in atoms}
    systems.update({m: (a.get_chemical_symbols(), a.positions) for m, a in mols.items()})
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.out)), "results")
    os.makedirs(logdir, exist_ok=True)
    E = {"gpaw": {}, "pyscf": {}}
    reuse = {}
    if args.pyscf_from:
        with open(args.pyscf_from) as f:
            old = json.load(f)
        if old["settings"].get("basis") != args.basis:
            raise SystemExit(f"{args.pyscf_from} was run with another basis")
        reuse = old["energies_kcal"]["pyscf"]
    reuse_gpaw = {}
    if args.gpaw_from:
        with open(args.gpaw_from) as f:
            old = json.load(f)
        if (old["settings"].get("ecut"), old["settings"].get("box")) != (args.ecut, args.box):
            raise SystemExit(f"{args.gpaw_from} was run with another cutoff or box")
        reuse_gpaw = {v: old["energies_kcal"][v] for v in VARIANTS}
    if args.scf:
        return main_scf(args, mols, systems, logdir, reuse, reuse_gpaw)
    if args.relaxation:
        return main_relaxation(args, mols, systems, logdir)
    for name, (sym, pos) in systems.items():
        t = time.perf_counter()
        if reuse_gpaw and all(f"{name}/PBE" in reuse_gpaw[v] for v in VARIANTS):
            for v in VARIANTS:
                E.setdefault(v, {})[f"{name}/PBE"] = reuse_gpaw[v][f"{name}/PBE"]
                E[v][f"{name}/CIDER"] = reuse_gpaw[v][f"{name}/CIDER"]
        else:
            e, de = gpaw_energy(sym, pos, args.ecut, args.box,
                                os.path.join(logdir, f"gpaw_{name}_PBE.txt"))
            for variant, d in de.items():
                E.setdefault(variant, {})[f"{name}/PBE"] = e * EV_TO_KCAL
                E[variant][f"{name}/CIDER"] = (e + d) * EV_TO_KCAL
            print(f"GPAW  {name:4s} PBE {e:14.6f} eV  CIDER-PBE " +
                  " ".join(f"{v} {d:10.6f}" for v, d in de.items()) +
                  f" eV  {time.perf_counter() - t:7.1f} s", flush=True)
        if f"{name}/PBE" in reuse:
            E["pyscf"][f"{name}/PBE"] = reuse[f"{name}/PBE"]
            E["pyscf"][f"{name}/CIDER"] = reuse[f"{name}/CIDER"]
            continue
        t = time.perf_counter()
        e, de = pyscf_energy(sym, pos, args.basis)
        E["pyscf"][f"{name}/PBE"] = e * HARTREE_TO_KCAL
        E["pyscf"][f"{name}/CIDER"] = (e + de) * HARTREE_TO_KCAL
        print(f"PySCF {name:4s} PBE {e:14.8f} Ha  CIDER-PBE {de:10.6f} Ha  "
              f"{time.perf_counter() - t:7.1f} s", flush=True)
    rows = []
    codes = ["gpaw", "pyscf", "gpaw_local", "gpaw_onsite_pbe"]
    print("\nCIDER - PBE atomization energy at the PBE densities (kcal/mol)")
    print(f"{'molecule':8s} {'GPAW':>9s} {'PySCF':>9s} {'diff':>8s} {'GPAW local':>11s} "
          f"{'diff':>8s} {'GPAW PBE on site':>17s}")
    for m, a in mols.items():
        d = {}
        for code in codes:
            ae = {xc: sum(E[code][f"{s}/{xc}"] for s in a.get_chemical_symbols())
                  - E[code][f"{m}/{xc}"] for xc in ("PBE", "CIDER")}
            d[code] = ae["CIDER"] - ae["PBE"]
        rows.append({"molecule": m, **d, "diff": d["gpaw"] - d["pyscf"],
                     "diff_local": d["gpaw_local"] - d["pyscf"]})
        print(f"{m:8s} {d['gpaw']:9.3f} {d['pyscf']:9.3f} {d['gpaw'] - d['pyscf']:8.3f} "
              f"{d['gpaw_local']:11.3f} {d['gpaw_local'] - d['pyscf']:8.3f} "
              f"{d['gpaw_onsite_pbe']:17.3f}")
    worst = max(abs(r["diff"]) for r in rows)
    print(f"max |GPAW - PySCF| = {worst:.3f} kcal/mol (goal <= 1): "
          f"{'MET' if worst <= 1.0 else 'NOT MET'}")
    print("(GPAW: PAW-consistent features, paw_features='nonlocal'; GPAW local: local\n"
          " features on site; last column: PBE exchange instead of CIDER on site)")
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "energies_kcal": E, "rows": rows,
                   "max_abs_diff": worst}, f, indent=1)


def main_scf(args, mols, systems, logdir, reuse, reuse_gpaw):
    E = {"gpaw": {}, "pyscf": {}}
    info = {}
    for name, (sym, pos) in systems.items():
        t = time.perf_counter()
        if reuse_gpaw and f"{name}/PBE" in reuse_gpaw["gpaw"]:
            E["gpaw"][f"{name}/PBE"] = reuse_gpaw["gpaw"][f"{name}/PBE"]
        else:
            e, _ = gpaw_energy(sym, pos, args.ecut, args.box,
                               os.path.join(logdir, f"gpaw_{name}_PBE.txt"))
            E["gpaw"][f"{name}/PBE"] = e * EV_TO_KCAL
        e, niter = gpaw_scf_energy(sym, pos, args.ecut, args.box,
                                   os.path.join(logdir, f"gpaw_{name}_CIDER_scf.txt"))
        E["gpaw"][f"{name}/CIDER"] = e * EV_TO_KCAL
        info[f"gpaw/{name}"] = {"iterations": niter, "seconds": time.perf_counter() - t}
        print(f"GPAW  {name:4s} CIDER SCF {e:14.6f} eV in {niter} iterations  "
              f"{time.perf_counter() - t:7.1f} s", flush=True)
        t = time.perf_counter()
        if f"{name}/PBE" in reuse:
            E["pyscf"][f"{name}/PBE"] = reuse[f"{name}/PBE"]
        else:
            e, _ = pyscf_energy(sym, pos, args.basis)
            E["pyscf"][f"{name}/PBE"] = e * HARTREE_TO_KCAL
        e = pyscf_scf_energy(sym, pos, args.basis)
        E["pyscf"][f"{name}/CIDER"] = e * HARTREE_TO_KCAL
        print(f"PySCF {name:4s} CIDER SCF {e:14.8f} Ha  {time.perf_counter() - t:7.1f} s",
              flush=True)
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "energies_kcal": E, "scf": info}, f, indent=1)
    rows = []
    print("\nCIDER - PBE atomization energy, both self-consistent (kcal/mol)")
    print(f"{'molecule':8s} {'GPAW':>9s} {'PySCF':>9s} {'diff':>8s}")
    for m, a in mols.items():
        d = {}
        for code in ("gpaw", "pyscf"):
            ae = {xc: sum(E[code][f"{s}/{xc}"] for s in a.get_chemical_symbols())
                  - E[code][f"{m}/{xc}"] for xc in ("PBE", "CIDER")}
            d[code] = ae["CIDER"] - ae["PBE"]
        rows.append({"molecule": m, **d, "diff": d["gpaw"] - d["pyscf"]})
        print(f"{m:8s} {d['gpaw']:9.3f} {d['pyscf']:9.3f} {d['gpaw'] - d['pyscf']:8.3f}")
    worst = max(abs(r["diff"]) for r in rows)
    print(f"max |GPAW - PySCF| = {worst:.3f} kcal/mol (goal <= 1): "
          f"{'MET' if worst <= 1.0 else 'NOT MET'}")
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "energies_kcal": E, "scf": info, "rows": rows,
                   "max_abs_diff": worst}, f, indent=1)


def gpaw_relaxation(symbols, positions, ecut, box, logdir, name):
    """E_CIDER at the PBE density and self-consistent (eV), iterations."""
    from gpaw import GPAW
    from cider_xc.gpaw import CiderXC
    atoms, kw = gpaw_setup(symbols, positions, ecut, box,
                           os.path.join(logdir, f"gpaw_{name}_PBE_{ecut:g}_{box:g}.txt"))
    atoms.calc = GPAW(xc="PBE", **kw)
    e_pbe = atoms.get_potential_energy()
    e_first = e_pbe + atoms.calc.get_xc_difference(CiderXC())
    e_scf, niter = gpaw_scf_energy(symbols, positions, ecut, box, os.path.join(
        logdir, f"gpaw_{name}_CIDER_scf_{ecut:g}_{box:g}.txt"))
    return e_first, e_scf, niter


def pyscf_relaxation(symbols, positions, basis):
    """E_CIDER at the PBE density and self-consistent (Ha)."""
    e_pbe, de = pyscf_energy(symbols, positions, basis)
    return e_pbe + de, pyscf_scf_energy(symbols, positions, basis)


def main_relaxation(args, mols, systems, logdir):
    """Self-consistent comparison as first order + relaxation: the CIDER -
    PBE atomization energy at the PBE densities (the converged settings of
    --first-order, default 900 eV / 11 A and cc-pCV5Z) plus, per code, the
    relaxation of the CIDER energy from the PBE density to its own SCF
    density (a second-order quantity, computed at --ecut/--box and --basis).
    The relaxation's dependence on the GPAW settings is measured by running
    this at two settings."""
    first = args.first_order or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "results_gpaw_pyscf_consistency.json")
    relax = {"gpaw": {}, "pyscf": {}}
    info = {}
    out = {"settings": vars(args), "first_order_file": os.path.basename(first)}
    if args.relaxation_from:
        with open(args.relaxation_from) as f:
            old = json.load(f)
        for k in ("ecut", "box", "basis", "model_checksum"):
            if old["settings"][k] != getattr(args, k):
                raise SystemExit(f"{args.relaxation_from} was run with another {k}")
        relax, info = old["relaxation_kcal"], old["runs"]
        systems = {}
    for name, (sym, pos) in systems.items():
        t = time.perf_counter()
        e1, e2, niter = gpaw_relaxation(sym, pos, args.ecut, args.box, logdir, name)
        relax["gpaw"][name] = (e2 - e1) * EV_TO_KCAL
        info[f"gpaw/{name}"] = {"iterations": niter, "seconds": time.perf_counter() - t,
                                "e_first_eV": e1, "e_scf_eV": e2}
        print(f"GPAW  {name:4s} CIDER at PBE density {e1:14.6f} eV, SCF {e2:14.6f} eV "
              f"({niter} iterations): relaxation {relax['gpaw'][name]:8.4f} kcal/mol  "
              f"{time.perf_counter() - t:7.1f} s", flush=True)
        t = time.perf_counter()
        e1, e2 = pyscf_relaxation(sym, pos, args.basis)
        relax["pyscf"][name] = (e2 - e1) * HARTREE_TO_KCAL
        info[f"pyscf/{name}"] = {"seconds": time.perf_counter() - t, "e_first_Ha": e1,
                                 "e_scf_Ha": e2}
        print(f"PySCF {name:4s} CIDER at PBE density {e1:14.8f} Ha, SCF {e2:14.8f} Ha: "
              f"relaxation {relax['pyscf'][name]:8.4f} kcal/mol  "
              f"{time.perf_counter() - t:7.1f} s", flush=True)
        out.update(relaxation_kcal=relax, runs=info)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    # combine with the first-order file only now: the relaxation energies
    # (saved above) can be computed while that file is being made, and
    # recombined later with --relaxation-from
    with open(first) as f:
        fo_all = json.load(f)
    fo = {r["molecule"]: r for r in fo_all["rows"]}
    if fo_all["settings"].get("model_checksum") != args.model_checksum:
        raise SystemExit(f"{first} was computed with another model (checksum "
                         f"{fo_all['settings'].get('model_checksum')}, now "
                         f"{args.model_checksum}): rerun it, then recombine with "
                         f"--relaxation-from {args.out}")
    rows = []
    lines = [f"CIDER - PBE atomization energy, self-consistent = at the PBE densities "
             f"({out['first_order_file']}) + SCF relaxation (GPAW PW({args.ecut:g} eV), "
             f"{args.box:g} A box; PySCF {args.basis}), kcal/mol",
             f"{'molecule':8s} {'relax GPAW':>10s} {'relax PySCF':>11s} {'GPAW':>9s} "
             f"{'PySCF':>9s} {'diff':>8s} {'diff at PBE dens.':>17s}"]
    for m, a in mols.items():
        syms = a.get_chemical_symbols()
        # atomization relaxation: atoms minus molecule
        dr = {c: sum(relax[c][s] for s in syms) - relax[c][m] for c in relax}
        d = {c: fo[m][c] + dr[c] for c in relax}
        rows.append({"molecule": m, "relax_gpaw": dr["gpaw"], "relax_pyscf": dr["pyscf"],
                     "gpaw": d["gpaw"], "pyscf": d["pyscf"], "diff": d["gpaw"] - d["pyscf"],
                     "diff_first_order": fo[m]["diff"]})
        lines.append(f"{m:8s} {dr['gpaw']:10.3f} {dr['pyscf']:11.3f} {d['gpaw']:9.3f} "
                     f"{d['pyscf']:9.3f} {d['gpaw'] - d['pyscf']:8.3f} {fo[m]['diff']:17.3f}")
    worst = max(abs(r["diff"]) for r in rows)
    lines.append(f"max |GPAW - PySCF| = {worst:.3f} kcal/mol (goal <= 1): "
                 f"{'MET' if worst <= 1.0 else 'NOT MET'}")
    print("\n" + "\n".join(lines))
    out.update(rows=rows, max_abs_diff=worst)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.splitext(args.out)[0] + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
