"""Reaction energies of held-out systems from the validation results files.

Reads the self-consistent energies (CIDER, PBE, and PBE0 from the reference
data) that benchmarks/g2_validation.py stored for held-out sets, and prints
reaction energies against PBE0 (kcal/mol).  Every species must be in one of
the files.

    .venv/bin/python benchmarks/reactions.py benchmarks/results_g2_validation.json \
        benchmarks/results_heldout_heavy.json --out benchmarks/results_reactions
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

HARTREE_TO_KCAL = 627.5094740631
# reactant coefficients negative, products positive
REACTIONS = {
    "H2 + I2 -> 2 HI": {"H2": -1, "I2": -1, "HI": 2},
    "CH4 + HBr -> CH3Br + H2": {"CH4": -1, "HBr": -1, "CH3Br": 1, "H2": 1},
    "CH4 + HI -> CH3I + H2": {"CH4": -1, "HI": -1, "CH3I": 1, "H2": 1},
    "H2 + Cl2 -> 2 HCl": {"H2": -1, "Cl2": -1, "HCl": 2},
    "Li+ + Cl- -> LiCl": {"Li+": -1, "Cl-": -1, "LiCl": 1},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    E = {}
    for path in args.results:
        with open(path) as fh:
            res = json.load(fh)
        for m, tab in res["energies"].items():
            E.setdefault(m, {}).update(tab)
    methods = [m for m in ("CIDER", "PBE") if m in E]
    lines = [f"{'reaction':28s} {'PBE0':>9s} " + " ".join(f"{m + '-PBE0':>11s}" for m in methods)]
    rows = {}
    for name, coefs in REACTIONS.items():
        if not coefs or not all(all(s in E[m] for s in coefs) for m in methods + ["PBE0"]):
            continue
        val = {m: sum(c * E[m][s] for s, c in coefs.items()) * HARTREE_TO_KCAL
               for m in methods + ["PBE0"]}
        rows[name] = val
        lines.append(f"{name:28s} {val['PBE0']:9.2f} "
                     + " ".join(f"{val[m] - val['PBE0']:11.2f}" for m in methods))
    for m in methods:
        dev = [abs(v[m] - v["PBE0"]) for v in rows.values()]
        if dev:
            lines.append(f"MAD {m}: {sum(dev) / len(dev):.2f} kcal/mol over {len(dev)} reactions")
    write_report(args.out, {"reactions": rows}, lines, final=True)


if __name__ == "__main__":
    main()
