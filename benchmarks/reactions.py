"""Reaction energies of held-out systems from the validation results files.

Reads the self-consistent energies (CIDER, PBE, and PBE0 from the reference
data) that benchmarks/g2_validation.py stored for held-out sets, and prints
reaction energies against PBE0 (kcal/mol).  A species missing from the files
(a training molecule such as H2 or Br2) is computed here the same way (plain
mf.kernel(), the reference's settings) from its reference-data file in
--refdir, which also gives its PBE0 energy.

    .venv/bin/python benchmarks/reactions.py benchmarks/results_g2_validation.json \
        benchmarks/results_heldout_heavy.json --refdir refdata/train \
        --out benchmarks/results_reactions
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
    "H2 + Br2 -> 2 HBr": {"H2": -1, "Br2": -1, "HBr": 2},
    "CH3Cl + HBr -> CH3Br + HCl": {"CH3Cl": -1, "HBr": -1, "CH3Br": 1, "HCl": 1},
    "CH3Cl + HI -> CH3I + HCl": {"CH3Cl": -1, "HI": -1, "CH3I": 1, "HCl": 1},
    "I2 + Cl2 -> 2 ICl": {"I2": -1, "Cl2": -1, "ICl": 2},
    "CH4 + HBr -> CH3Br + H2": {"CH4": -1, "HBr": -1, "CH3Br": 1, "H2": 1},
    "CH4 + HI -> CH3I + H2": {"CH4": -1, "HI": -1, "CH3I": 1, "H2": 1},
    "H2 + Cl2 -> 2 HCl": {"H2": -1, "Cl2": -1, "HCl": 2},
    "HCl -> H + Cl (atoms)": {"HCl": -1, "H": 1, "Cl": 1},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--refdir", default=None, help="reference data of missing species")
    ap.add_argument("--model", default="cider-pbe0")
    args = ap.parse_args(argv)
    E = {}
    for path in args.results:
        with open(path) as fh:
            res = json.load(fh)
        for m, tab in res["energies"].items():
            E.setdefault(m, {}).update(tab)
    methods = [m for m in ("CIDER", "PBE") if m in E]
    if args.refdir:
        from cider_xc.training import reference
        from g2_validation import scf_energy
        need = {s for c in REACTIONS.values() for s in c} - set(E["PBE0"])
        data = reference.load_dataset(args.refdir, need)
        for n, (attrs, _) in data.items():
            ref = json.loads(attrs["reference"])
            E["PBE0"][n] = float(attrs["e_tot"])
            for m in methods:
                E[m][n] = scf_energy(n, json.loads(attrs["symbols"]),
                                     json.loads(attrs["positions_angstrom"]),
                                     int(attrs["charge"]), int(attrs["spin"]), m,
                                     args.model, ref)["e"]
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
