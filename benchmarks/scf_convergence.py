"""SCF convergence of the shipped default with plain ``mf.kernel()`` in PySCF.

Every system is run as a user runs it: ``dft.UKS``/``dft.RKS`` (UKS for open
shells, ground-state spin for atoms), PySCF's default settings (DIIS,
conv_tol 1e-9, max_cycle 50, minao guess, grid level 3), no fallback helper,
with PBE and with CIDER side by side.  Reported: converged or not, cycles,
total cycles per set and their ratio CIDER/PBE, the worst system.

    .venv/bin/python benchmarks/scf_convergence.py --sets atoms g2_1 \
        --bases def2-svp def2-tzvp --df both --n-jobs 2 \
        --out benchmarks/results_scf_convergence

Sets: ``atoms`` (H-Kr), ``g2_1`` (the 55 molecules of ASE's G2-1), or any
system spec of cider_xc.training.systems (list files, extxyz sets).
Results: PREFIX.json (after every SCF) and PREFIX.txt.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

SET_SPECS = {"atoms": "atoms:H-Kr", "g2_1": "g2_1"}


def run_one(system, basis, df, xc_name, model):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pyscf import dft
    import cider_xc
    mol = system.to_mol(basis)
    mf = (dft.UKS if mol.spin else dft.RKS)(mol)
    if df:
        mf = mf.density_fit()
    mf.xc = cider_xc.load(model) if xc_name == "CIDER" else xc_name
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    t = time.perf_counter()
    e = mf.kernel()
    return {"name": system.name, "basis": basis, "df": df, "xc": xc_name, "e": float(e),
            "converged": bool(mf.converged), "cycles": len(cycles),
            "start_cycles": int(getattr(mf, "cider_start_cycles", 0) or 0),
            "seconds": time.perf_counter() - t}


def summarise(results, sets, bases, dfs):
    lines = []
    summary = {}
    for set_name, names in sets.items():
        for basis in bases:
            for df in dfs:
                key = f"{set_name}/{basis}/{'DF' if df else 'noDF'}"
                rs = {m: [r for r in results if r["name"] in names and r["basis"] == basis
                          and r["df"] == df and r["xc"] == m] for m in ("PBE", "CIDER")}
                if not rs["CIDER"]:
                    continue
                done = {r["name"] for r in rs["CIDER"]} & {r["name"] for r in rs["PBE"]}
                cyc = {m: sum(r["cycles"] for r in rs[m] if r["name"] in done) for m in rs}
                nc = {m: sorted(r["name"] for r in rs[m] if not r["converged"]) for m in rs}
                ratio = {r["name"]: r["cycles"] for r in rs["CIDER"]}
                pbe = {r["name"]: r["cycles"] for r in rs["PBE"]}
                worst = max(done, key=lambda n: ratio[n] / max(pbe[n], 1)) if done else None
                start = sum(r.get("start_cycles", 0) for r in rs["CIDER"] if r["name"] in done)
                summary[key] = {"n": len(done), "cycles_PBE": cyc["PBE"],
                                "cycles_CIDER": cyc["CIDER"], "start_cycles_CIDER": start,
                                "ratio": cyc["CIDER"] / max(cyc["PBE"], 1),
                                "not_converged": nc, "worst": worst,
                                "worst_cycles": [ratio.get(worst), pbe.get(worst)]}
                s = summary[key]
                lines.append(f"{key:28s} n={s['n']:3d}  cycles PBE {s['cycles_PBE']:5d}  CIDER "
                             f"{s['cycles_CIDER']:5d} (+{start} semilocal start)  ratio "
                             f"{s['ratio']:.2f}  worst {worst} "
                             f"({s['worst_cycles'][0]} vs {s['worst_cycles'][1]})  not converged: "
                             f"PBE {nc['PBE'] or 'none'}, CIDER {nc['CIDER'] or 'none'}")
    return summary, lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["atoms", "g2_1"])
    ap.add_argument("--bases", nargs="+", default=["def2-svp"])
    ap.add_argument("--df", choices=["yes", "no", "both"], default="both")
    ap.add_argument("--model", default=None, help="CIDER functional (default: shipped)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reuse", default=None,
                    help="take the PBE results (model-independent) from an earlier "
                         "PREFIX.json where it has the same system, basis and DF setting")
    ap.add_argument("--resume", default=None,
                    help="keep every result (PBE and CIDER) of an interrupted run of this "
                         "model from its PREFIX.json and run only the missing ones")
    args = ap.parse_args(argv)
    import json
    import joblib
    import cider_xc
    from cider_xc.training import systems
    model = args.model or cider_xc.DEFAULT_FUNCTIONAL
    dfs = {"yes": [True], "no": [False], "both": [True, False]}[args.df]
    reused = {}
    if args.reuse:
        with open(args.reuse) as f:
            reused = {(r["name"], r["basis"], r["df"]): r for r in json.load(f)["results"]
                      if r["xc"] == "PBE"}
    done = {}
    if args.resume and os.path.exists(args.resume):
        with open(args.resume) as f:
            old = json.load(f)
        if old["model"] == model:
            done = {(r["name"], r["basis"], r["df"], r["xc"]): r for r in old["results"]}
    sets = {}
    jobs = []
    results = []
    for s in args.sets:
        syss = systems.resolve(SET_SPECS.get(s, s))
        sets[s] = {x.name for x in syss}
        for basis in args.bases:
            for df in dfs:
                for x in syss:
                    for m in ("PBE", "CIDER"):
                        if (x.name, basis, df, m) in done:
                            results.append(done[(x.name, basis, df, m)])
                            continue
                        if m == "PBE" and (x.name, basis, df) in reused:
                            results.append(reused[(x.name, basis, df)])
                            continue
                        jobs.append(joblib.delayed(run_one)(x, basis, df, m, model))
    header = [f"plain mf.kernel(), PySCF defaults; CIDER = {cider_xc.load(model).describe()}",
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} per process, "
              f"{args.n_jobs} processes"
              + (f"; {len(results)} PBE runs reused from an earlier results file"
                 if results else ""), ""]
    par = joblib.Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")
    for i, r in enumerate(par(jobs)):
        results.append(r)
        print(f"[{i + 1}/{len(jobs)}] {r['name']:>10s} {r['basis']} {'DF' if r['df'] else '  '} "
              f"{r['xc']:5s} conv={r['converged']} cycles={r['cycles']} {r['seconds']:.1f}s",
              flush=True)
        summary, lines = summarise(results, sets, args.bases, dfs)
        write_report(args.out, {"model": model, "summary": summary, "results": results},
                     header + lines, final=False)
    summary, lines = summarise(results, sets, args.bases, dfs)
    rows = ["", f"{'system':>10s} {'basis':>10s} {'DF':>4s} {'PBE':>5s} {'CIDER':>6s}"]
    by = {}
    for r in results:
        by.setdefault((r["name"], r["basis"], r["df"]), {})[r["xc"]] = r
    for (n, b, df), d in sorted(by.items(), key=lambda kv: str(kv[0])):
        if "PBE" in d and "CIDER" in d:
            mark = lambda r: f"{r['cycles']}{'' if r['converged'] else '!'}"  # noqa: E731
            rows.append(f"{n:>10s} {b:>10s} {'DF' if df else '':>4s} {mark(d['PBE']):>5s} "
                        f"{mark(d['CIDER']):>6s}")
    write_report(args.out, {"model": model, "summary": summary, "results": results},
                 header + lines + rows + ["(! = not converged)"], final=True)
    return summary


if __name__ == "__main__":
    main()
