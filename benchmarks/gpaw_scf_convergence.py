"""SCF convergence of the shipped default in plain GPAW (default mixer and
eigensolver), next to PBE: isolated atoms and molecules in a box, bcc Fe and Si.

Reported per system and functional: converged or not, SCF iterations, the
energy of the first iteration against the converged one (GPAW's log), wall
time.  Atoms run spin-polarised with Hund's rule and symmetry off.

GPAW 26 runs an XC object such as CiderXC through its legacy calculator
(gpaw.old), and a plain xc string such as 'PBE' through the new one, whose
SCF driver counts iterations differently.  So PBE runs twice: as a user gets
it ("PBE") and in the same legacy driver as CIDER ("PBE-legacy", the baseline
of the iteration ratio); GPAW's own meta-GGA TPSS (legacy) shows what a
meta-GGA costs in iterations there (r2SCAN and SCAN stop on the isolated atoms
with NaN energies or do not converge at these settings).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpaw_scf_convergence.py \
        --out benchmarks/results_gpaw_scf_convergence [--ecut 500] [--systems H N O H2O N2 CO Fe Si]

Results: PREFIX.json (after every run) and PREFIX.txt.
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

MOLECULES = {"H2O": "H2O", "N2": "N2", "CO": "CO"}
XCS = ("PBE", "PBE-legacy", "TPSS-legacy", "CIDER")
BASE = "PBE-legacy"
HUND = {"H": 1, "N": 3, "O": 2}


def build(name, box):
    from ase import Atoms
    from ase.build import bulk, molecule
    if name in HUND:
        at = Atoms(name, magmoms=[HUND[name]])
        at.center(vacuum=box / 2)
        return at, dict(symmetry="off", hund=True)
    if name in MOLECULES:
        at = molecule(MOLECULES[name])
        at.center(vacuum=box / 2)
        return at, {}
    if name == "Fe":
        at = bulk("Fe", "bcc", a=2.87)
        at.set_initial_magnetic_moments([2.0])
        return at, dict(kpts=(4, 4, 4))
    if name == "Si":
        return bulk("Si", "diamond", a=5.43), dict(kpts=(4, 4, 4))
    raise SystemExit(f"unknown system {name}")


def first_energy(txt):
    """First and last iteration energies (eV) from GPAW's log (legacy lines
    'iter:   1 12:00:00  -1.23' and new-GPAW table rows '|iter:   1| 12:00:00 |  -1.23')."""
    es = [float(m.group(1)) for m in
          re.finditer(r"^\|?iter:\s+\d+\|?\s+\S+\s+\|?\s*(-?[\d.]+)", txt, re.M)]
    return (es[0], es[-1]) if es else (None, None)


def run(name, xc_name, ecut, box, model, maxiter, logdir):
    from gpaw import GPAW, PW
    at, kw = build(name, box)
    if xc_name == "CIDER":
        import cider_xc
        from cider_xc.gpaw import CiderXC
        xc = CiderXC(cider_xc.load(model))
    elif xc_name.endswith("-legacy"):
        xc = xc_name[:-len("-legacy")]
        kw = dict(kw, legacy_gpaw=True)
    else:
        xc = xc_name
    txt = os.path.join(logdir, f"{name}-{xc_name}.txt")
    calc = GPAW(mode=PW(ecut), xc=xc, txt=txt, maxiter=maxiter, **kw)
    at.calc = calc
    t = time.perf_counter()
    conv = True
    try:
        e = at.get_potential_energy()
    except Exception as exc:  # GPAW raises KohnShamConvergenceError
        conv, e = False, float("nan")
        err = f"{type(exc).__name__}: {exc}"
    else:
        err = None
    secs = time.perf_counter() - t
    with open(txt) as fh:
        e1, elast = first_energy(fh.read())
    niter = calc.get_number_of_iterations() if conv else maxiter
    return {"system": name, "xc": xc_name, "converged": conv, "iterations": niter,
            "energy": e, "first_energy": e1, "last_logged": elast, "seconds": secs,
            "error": err}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["H", "N", "O", "H2O", "N2", "CO", "Fe",
                                                     "Si"])
    ap.add_argument("--ecut", type=float, default=500.0)
    ap.add_argument("--box", type=float, default=7.0, help="box edge for atoms/molecules (A)")
    ap.add_argument("--maxiter", type=int, default=100)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--logdir", default="gpaw-scf-logs")
    ap.add_argument("--reuse", default=None,
                    help="take the rows of the model-independent runs (every xc but CIDER) "
                         "from an earlier results .json of the same settings")
    args = ap.parse_args(argv)
    reused = {}
    if args.reuse:
        with open(args.reuse) as f:
            reused = {(r["system"], r["xc"]): r for r in json.load(f)["rows"]
                      if r["xc"] != "CIDER"}
    import cider_xc
    model = args.model or cider_xc.DEFAULT_FUNCTIONAL
    os.makedirs(args.logdir, exist_ok=True)
    rows = []
    head = [f"plain GPAW, PW({args.ecut:g} eV), default mixer/eigensolver; atoms and "
            f"molecules in a {args.box:g} A box; CIDER = {model}",
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, one process"
            + (f"; non-CIDER rows reused from {args.reuse}" if args.reuse else ""), "",
            f"{'system':>6s} {'xc':>11s} {'conv':>5s} {'iter':>5s} {'E / eV':>14s} "
            f"{'first iter':>12s} {'s':>7s}"]
    lines = []
    for name in args.systems:
        for xc in XCS:
            r = reused.get((name, xc)) or run(name, xc, args.ecut, args.box, model,
                                              args.maxiter, args.logdir)
            rows.append(r)
            lines.append(f"{name:>6s} {xc:>11s} {str(r['converged']):>5s} {r['iterations']:5d} "
                         f"{r['energy']:14.6f} {r['first_energy'] or float('nan'):12.3f} "
                         f"{r['seconds']:7.1f}")
            print(lines[-1], flush=True)
            write_report(args.out, {"model": model, "rows": rows}, head + lines, final=False)
    by = {(r["system"], r["xc"]): r for r in rows}
    tot = {xc: sum(by[(n, xc)]["iterations"] for n in args.systems) for xc in XCS}
    worst = max(args.systems, key=lambda n: by[(n, "CIDER")]["iterations"]
                / max(by[(n, BASE)]["iterations"], 1))
    nc = [n for n in args.systems if not by[(n, "CIDER")]["converged"]]
    far = [n for n in args.systems if by[(n, "CIDER")]["converged"]
           and abs(by[(n, "CIDER")]["first_energy"]) > 10 * max(abs(by[(n, "CIDER")]["energy"]), 1)]
    ncm = {xc: [n for n in args.systems if not by[(n, xc)]["converged"]] for xc in XCS}
    summary = {"iterations": tot, "ratio": tot["CIDER"] / max(tot[BASE], 1),
               "ratio_to_new_gpaw_pbe": tot["CIDER"] / max(tot["PBE"], 1), "worst": worst,
               "not_converged": nc, "not_converged_by_xc": ncm,
               "first_iteration_more_than_10x_off": far}
    lines += ["", "iterations (non-converged runs count maxiter): "
              + ", ".join(f"{xc} {tot[xc]}" for xc in XCS),
              f"CIDER / PBE-legacy (same SCF driver): {summary['ratio']:.2f}; CIDER / PBE "
              f"(new GPAW driver): {summary['ratio_to_new_gpaw_pbe']:.2f}; worst {worst}",
              "not converged: " + "; ".join(f"{xc} {ncm[xc] or 'none'}" for xc in XCS),
              f"CIDER first iteration > 10x off the converged energy: {far or 'none'}"]
    write_report(args.out, {"model": model, "rows": rows, "summary": summary}, head + lines,
                 final=True)
    return summary


if __name__ == "__main__":
    main()
