"""Held-out validation of a PBE0-surrogate CIDER functional.

For every system of a reference-data directory (made with the same settings
as the training data, e.g. the held-out lists of data/training/):

1. Exchange on PBE0 orbitals: CIDER and PBE exchange energies against the
   exact (Hartree-Fock) exchange of the reference data (absolute, molecules
   only, atomization).
2. Uncertainty: the GP's predicted exchange-error scale sum_g |w_g e_g| std_g
   and the share of the exchange energy on points beyond the model's point
   threshold (the out-of-domain warning of cider_xc.pyscf.domain), against
   the actual exchange error; Spearman rank correlation.
3. Self-consistent energies with plain ``mf.kernel()`` (PySCF defaults except
   the reference's basis, grid level and density fitting; def2 ECPs where
   def2 puts them; UKS for open shells), CIDER and PBE, against PBE0 from the
   reference data: total energies, atomization energies, SCF cycles.

    .venv/bin/python benchmarks/g2_validation.py MODEL REFDIR --out PREFIX [--n-jobs 2]

    # held-out G2-1 (REFDIR from: cider-xc train's [evaluate] step, or
    #   cider-xc generate atoms:H-Ar g2_1 --out REFDIR)
    .venv/bin/python benchmarks/g2_validation.py cider-pbe0 refdata/validation \
        --only-list atoms:H-Ar data/training/validation-g2_1.txt \
        --out benchmarks/results_g2_validation
    # held-out heavier elements, ECPs, ions, stretched bonds
    .venv/bin/python benchmarks/g2_validation.py cider-pbe0 refdata/validation \
        --only-list data/training/validation-heavy.txt --out benchmarks/results_heldout_heavy

The PBE0 reference energies come from the reference data, computed with
exactly these settings.  Results: PREFIX.json (after every SCF) and PREFIX.txt.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

HARTREE_TO_KCAL = 627.5094740631


def scf_energy(name, symbols, positions, charge, spin, xc_name, model, ref):
    """One plain SCF, as a user runs it: mf.kernel() with PySCF's defaults."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pyscf import dft
    import cider_xc
    from cider_xc.training.systems import System
    mol = System(name, symbols, np.asarray(positions), charge, spin).to_mol(ref["basis"])
    mf = (dft.UKS if spin else dft.RKS)(mol)
    if ref["density_fit"]:
        mf = mf.density_fit()
    mf.grids.level = ref["grid_level"]
    mf.xc = cider_xc.load(model) if xc_name == "CIDER" else xc_name
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    t = time.perf_counter()
    e = mf.kernel()
    rep = getattr(mf, "cider_domain_report", None)
    return {"name": name, "xc": xc_name, "e": float(e), "converged": bool(mf.converged),
            "cycles": len(cycles), "seconds": time.perf_counter() - t,
            # cycles of the semilocal start (cider_xc.pyscf.start) before the CIDER SCF
            "start_cycles": int(getattr(mf, "cider_start_cycles", 0) or 0),
            "out_of_domain_warning": bool(rep["out_of_domain"]) if rep else None}


def spearman(a, b):
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def exchange_and_uncertainty(fn, data):
    """Per system: exchange energies (Hartree) and the GP uncertainty terms."""
    from cider_xc.pyscf.domain import thresholds
    from cider_xc.training import fit
    res = fit.evaluate_exchange(fn, data)
    systems, _, _ = fit.training_systems(data)
    thr, frac = thresholds(fn)
    for name, row in res["systems"].items():
        X, w = systems[name]
        std = fn.uncertainty(X.T)
        aw = np.abs(w)
        row["error_scale"] = float(aw @ std)
        row["weight_above"] = float(aw[std > thr].sum() / aw.sum())
        row["flagged"] = row["weight_above"] > frac
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("refdir")
    ap.add_argument("--only-list", nargs="+", default=None,
                    help="validate only these systems (specs or list files; name the "
                         "atoms too, for atomization energies)")
    ap.add_argument("--out", required=True, help="results prefix (PREFIX.json, PREFIX.txt)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["CIDER", "PBE"])
    ap.add_argument("--no-scf", action="store_true")
    ap.add_argument("--reuse", default=None,
                    help="take the SCF results of these methods from an earlier PREFIX.json "
                         "of the same systems (e.g. PBE, which does not depend on the model); "
                         "format METHOD[,METHOD]:FILE")
    ap.add_argument("--bad", type=float, default=10.0,
                    help="a system counts as bad when |E_x^CIDER - E_x^HF| exceeds this "
                         "(kcal/mol)")
    args = ap.parse_args(argv)
    import joblib
    import cider_xc
    from cider_xc.training import fit, reference, systems
    fn = cider_xc.load(args.model)
    names = None
    if args.only_list:
        names = {s.name for s in systems.resolve(args.only_list)}
    data = reference.load_dataset(args.refdir, names)
    res = exchange_and_uncertainty(fn, data)
    mols = [n for n in data if fit.atomization_coefs(data, n)]
    targets = [n for n in data if len(json.loads(data[n][0]["symbols"])) > 1
               or int(data[n][0]["charge"]) != 0]
    lines = [f"{fn.name} ({fn.describe()}) on {args.refdir}"
             + (f" [{' '.join(map(os.path.basename, args.only_list))}]"
                if args.only_list else ""),
             f"{len(data)} systems, {len(targets)} molecules/ions, {len(mols)} with "
             "atomization energies", ""]
    rows = res["systems"]
    k = HARTREE_TO_KCAL
    ex_c = np.array([rows[n]["cider"] - rows[n]["exx"] for n in targets]) * k
    ex_p = np.array([rows[n]["pbe"] - rows[n]["exx"] for n in targets]) * k
    lines += ["exchange on PBE0 orbitals, kcal/mol (MAE)",
              f"  all systems          CIDER {res['mae_ex_cider']:8.3f}   PBE {res['mae_ex_pbe']:8.3f}",
              f"  molecules/ions only  CIDER {np.mean(np.abs(ex_c)):8.3f}   PBE "
              f"{np.mean(np.abs(ex_p)):8.3f}   ratio "
              f"{np.mean(np.abs(ex_c)) / np.mean(np.abs(ex_p)):.3f}",
              f"  atomization E_x      CIDER {res['mae_aex_cider']:8.3f}   PBE {res['mae_aex_pbe']:8.3f}",
              ""]
    # uncertainty calibration over every system of the set
    allnames = list(rows)
    actual = np.array([abs(rows[n]["cider"] - rows[n]["exx"]) * k for n in allnames])
    pred = np.array([rows[n]["error_scale"] * k for n in allnames])
    flagged = np.array([rows[n]["flagged"] for n in allnames])
    bad = actual > args.bad
    rho = spearman(pred, actual)
    lines += ["uncertainty (GP posterior) against the actual exchange error",
              f"  Spearman rank correlation (predicted scale vs |error|): {rho:.3f}",
              f"  out-of-domain flag: {int(flagged.sum())} flagged, {int(bad.sum())} bad "
              f"(|error| > {args.bad:g} kcal/mol), {int((flagged & bad).sum())} both", ""]
    exch = {kk: v for kk, v in res.items() if kk.startswith("mae")}
    exch.update(mae_ex_molecules_cider=float(np.mean(np.abs(ex_c))),
                mae_ex_molecules_pbe=float(np.mean(np.abs(ex_p))), n_molecules=len(targets))
    payload = {"model": fn.name, "refdir": args.refdir, "list": args.only_list,
               "exchange": exch,
               "spearman": rho, "n_flagged": int(flagged.sum()), "n_bad": int(bad.sum()),
               "n_flagged_and_bad": int((flagged & bad).sum()),
               "systems": rows}
    write_report(args.out, payload, lines, final=args.no_scf)
    if args.no_scf:
        return payload
    ref = json.loads(next(iter(data.values()))[0]["reference"])
    scf = {m: {} for m in args.methods}
    if args.reuse:
        ms, path = args.reuse.split(":", 1)
        with open(path) as fh:
            old = json.load(fh)["scf"]
        for m in ms.split(","):
            scf[m] = {n: r for n, r in old[m].items() if n in data}
        lines.append(f"SCF results of {ms} taken from {os.path.basename(path)} "
                     f"({sum(len(scf[m]) for m in ms.split(','))} runs; --reuse); "
                     "the PBE0 references and the exchange evaluation are this run's")
        lines.append("")
    jobs = []
    for n, (attrs, _) in data.items():
        for m in args.methods:
            if n in scf[m]:
                continue
            jobs.append(joblib.delayed(scf_energy)(
                n, json.loads(attrs["symbols"]), json.loads(attrs["positions_angstrom"]),
                int(attrs["charge"]), int(attrs["spin"]), m, args.model, ref))
    payload["scf"] = scf       # (also when every run was reused)
    par = joblib.Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")
    for i, r in enumerate(par(jobs)):
        scf[r["xc"]][r["name"]] = r
        print(f"[{i + 1}/{len(jobs)}] {r['name']:>14s} {r['xc']:6s} E={r['e']:.8f} "
              f"conv={r['converged']} cycles={r['cycles']} {r['seconds']:.1f}s", flush=True)
        payload["scf"] = scf
        write_report(args.out, payload, lines, final=False)
    E = {m: {n: r["e"] for n, r in scf[m].items()} for m in args.methods}
    E["PBE0"] = {n: float(a["e_tot"]) for n, (a, _) in data.items()}
    lines.append("self-consistent, plain mf.kernel(), deviation from PBE0 (kcal/mol)")
    tot = {m: {n: (E[m][n] - E["PBE0"][n]) * k for n in data} for m in args.methods}
    for m in args.methods:
        d = np.array(list(tot[m].values()))
        worst = max(tot[m], key=lambda n: abs(tot[m][n]))
        lines.append(f"  total energy  {m:6s} MAD {np.mean(np.abs(d)):8.3f}   max "
                     f"{abs(tot[m][worst]):8.3f} ({worst})")
    ae = {}
    for n in mols:
        coefs = fit.atomization_coefs(data, n)
        ae[n] = {m: sum(c * E[m][kk] for kk, c in coefs.items()) * k for m in E}
    for m in args.methods:
        if not ae:
            break
        dev = {n: ae[n][m] - ae[n]["PBE0"] for n in ae}
        worst = max(dev, key=lambda n: abs(dev[n]))
        payload[f"scf_mad_{m}"] = float(np.mean(np.abs(list(dev.values()))))
        payload[f"scf_max_{m}"] = [worst, float(abs(dev[worst]))]
        lines.append(f"  atomization   {m:6s} MAD {payload[f'scf_mad_{m}']:8.3f}   max "
                     f"{abs(dev[worst]):8.3f} ({worst})")
    for m in args.methods:
        nc = sorted(n for n, r in scf[m].items() if not r["converged"])
        cyc = sum(r["cycles"] for r in scf[m].values())
        worst = max(scf[m], key=lambda n: scf[m][n]["cycles"])
        lines.append(f"  {m:6s} SCF cycles {cyc} in all (worst {worst}: "
                     f"{scf[m][worst]['cycles']}); not converged: {nc or 'none'}")
        payload[f"cycles_{m}"] = cyc
        st = sum(r.get("start_cycles", 0) for r in scf[m].values())
        if st:
            payload[f"start_cycles_{m}"] = st
            lines.append(f"  {m:6s} plus {st} cycles of the semilocal start (PBE analogue, "
                         "cider_xc.pyscf.start) before the CIDER SCFs")
        payload[f"not_converged_{m}"] = nc
    warned = sorted(n for n, r in scf.get("CIDER", {}).items() if r["out_of_domain_warning"])
    lines.append(f"  out-of-domain warning in the CIDER SCF logs: {warned or 'none'}")
    lines.append("")
    lines.append(f"{'system':>14s} " + " ".join(f"{m + '-PBE0':>11s}" for m in args.methods)
                 + f" {'Ex err C':>9s} {'Ex err P':>9s} {'pred.':>7s} {'flag':>4s}")
    for n in data:
        r = rows[n]
        lines.append(f"{n:>14s} " + " ".join(f"{tot[m][n]:11.2f}" for m in args.methods)
                     + f" {(r['cider'] - r['exx']) * k:9.2f} {(r['pbe'] - r['exx']) * k:9.2f}"
                     f" {r['error_scale'] * k:7.1f} {'yes' if r['flagged'] else '':>4s}")
    payload.update({"atomization_kcal": ae, "total_vs_pbe0_kcal": tot, "energies": E,
                    "warned": warned})
    write_report(args.out, payload, lines, final=True)
    return payload


if __name__ == "__main__":
    main()
