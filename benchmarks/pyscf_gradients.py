"""Wall time of CIDER nuclear gradients in PySCF against PBE and PBE0.

For each molecule (H2O and naphthalene, 10 heavy atoms, by default) and each
method: the SCF wall time and the analytic gradient wall time, measured in
the same run on the same geometry, basis, grid (level 3, PySCF's default)
and density fitting.  The CIDER gradient is timed with PySCF's default
grid_response=False and again with grid_response=True.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/pyscf_gradients.py \
        [--basis def2-svp] [--molecules H2O naphthalene] [--no-df]

Results: benchmarks/results_pyscf_gradients.json and .txt.
"""
import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from pyscf import dft, gto, lib

import cider_xc

try:
    from _report import write_report
except ImportError:       # run from elsewhere
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write_report

OUT = Path(__file__).resolve().parent / "results_pyscf_gradients"


def naphthalene():
    """Planar C10H8 from ideal hexagons (C-C 1.40, C-H 1.08 Angstrom)."""
    d = 1.40
    h = d * np.sqrt(3) / 2
    carbons = [(0.0, d / 2), (0.0, -d / 2),                    # shared bond
               (h, d), (2 * h, d / 2), (2 * h, -d / 2), (h, -d),
               (-h, d), (-2 * h, d / 2), (-2 * h, -d / 2), (-h, -d)]
    atoms = [("C", (x, y, 0.0)) for x, y in carbons]
    centres = {2: (h, 0.0), 3: (h, 0.0), 4: (h, 0.0), 5: (h, 0.0),
               6: (-h, 0.0), 7: (-h, 0.0), 8: (-h, 0.0), 9: (-h, 0.0)}
    for i, (cx, cy) in centres.items():
        x, y = carbons[i]
        v = np.array([x - cx, y - cy])
        v /= np.linalg.norm(v)
        atoms.append(("H", (x + 1.08 * v[0], y + 1.08 * v[1], 0.0)))
    return atoms


MOLECULES = {
    "H2O": [("O", (0.0, 0.0, 0.1173)), ("H", (0.0, 0.7572, -0.4692)),
            ("H", (0.0, -0.7572, -0.4692))],
    "naphthalene": naphthalene(),
}


def run(mol, xc, density_fit, grid_responses=(False,)):
    mf = dft.RKS(mol)
    if density_fit:
        mf = mf.density_fit()
    mf.xc = xc
    mf.grids.level = 3
    mf.conv_tol = 1e-9
    t0, c0 = time.perf_counter(), time.process_time()
    e = mf.kernel()
    t_scf, c_scf = time.perf_counter() - t0, time.process_time() - c0
    grads = {}
    for gr in grid_responses:
        g = mf.nuc_grad_method()
        g.grid_response = gr
        g.verbose = 0
        t0, c0 = time.perf_counter(), time.process_time()
        de = g.kernel()
        grads[gr] = (time.perf_counter() - t0, de, time.process_time() - c0)
    return {"e_tot": float(e), "converged": bool(mf.converged), "scf_s": t_scf,
            "scf_cpu_s": c_scf, "grad_cpu_s": grads[False][2],
            "grad_response_cpu_s": grads[True][2] if True in grads else None,
            "cycles": int(mf.cycles), "grad_s": grads[False][0],
            "grad_response_s": grads[True][0] if True in grads else None,
            "max_abs_grad": float(np.abs(grads[False][1]).max()),
            "grad": grads[False][1].tolist(),
            "grad_response_minus_grad": (float(np.abs(grads[True][1] - grads[False][1]).max())
                                         if True in grads else None)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--basis", default="def2-svp")
    ap.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    ap.add_argument("--no-df", action="store_true", help="4-centre J/K instead of density fitting")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    fn = cider_xc.load()
    df = not args.no_df
    # warm up numba kernels (cached compilation) outside the timings
    warm = gto.M(atom=MOLECULES["H2O"], basis="sto-3g", verbose=0)
    run(warm, fn, df, (False, True))
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
               "lib.num_threads": lib.num_threads()}
    payload = {"functional": fn.describe(), "basis": args.basis, "density_fit": df,
               "grid_level": 3, "threads": threads,
               "machine": platform.processor() or platform.machine(), "results": {}}
    lines = [f"CIDER functional: {fn.describe()}",
             f"basis {args.basis}, grid level 3, RKS, density fitting: {df}, "
             f"{lib.num_threads()} thread(s); times in seconds (wall; the CPU-time "
             "ratios below are the robust ones on a loaded machine)",
             "",
             f"{'molecule':12s} {'nao':>4s} {'method':6s} {'SCF':>8s} {'cyc':>4s} "
             f"{'grad':>8s} {'grad/SCF':>9s} {'grad+resp':>10s}"]
    for name in args.molecules:
        mol = gto.M(atom=MOLECULES[name], basis=args.basis, verbose=0)
        res = {}
        for method, xc in (("PBE", "PBE"), ("PBE0", "PBE0"), ("CIDER", fn)):
            gr = (False, True) if method == "CIDER" else (False,)
            res[method] = run(mol, xc, df, gr)
            payload["results"].setdefault(name, {"natm": mol.natm, "nao": mol.nao})[method] = \
                res[method]
            write_report(args.out, payload, lines, final=False)
            r = res[method]
            resp = f"{r['grad_response_s']:10.2f}" if r["grad_response_s"] is not None else \
                f"{'-':>10s}"
            line = (f"{name:12s} {mol.nao:4d} {method:6s} {r['scf_s']:8.2f} {r['cycles']:4d} "
                    f"{r['grad_s']:8.2f} {r['grad_s'] / r['scf_s']:9.2f} {resp}")
            if not r["converged"]:
                line += "  (SCF not converged)"
            print(line, flush=True)
            lines.append(line)
        c = res["CIDER"]
        ratios = {"grad_cpu_cider_over_pbe": c["grad_cpu_s"] / res["PBE"]["grad_cpu_s"],
                  "grad_cpu_cider_over_pbe0": c["grad_cpu_s"] / res["PBE0"]["grad_cpu_s"],
                  "grad_cider_over_pbe": c["grad_s"] / res["PBE"]["grad_s"],
                  "grad_cider_over_pbe0": c["grad_s"] / res["PBE0"]["grad_s"],
                  "scf_cider_over_pbe": c["scf_s"] / res["PBE"]["scf_s"],
                  "scf_cider_over_pbe0": c["scf_s"] / res["PBE0"]["scf_s"]}
        payload["results"][name]["ratios"] = ratios
        line = (f"{name:12s} CPU time: CIDER gradient / PBE gradient "
                f"{ratios['grad_cpu_cider_over_pbe']:.2f}, / PBE0 gradient "
                f"{ratios['grad_cpu_cider_over_pbe0']:.2f} (grad CPU s: CIDER "
                f"{c['grad_cpu_s']:.2f}, PBE {res['PBE']['grad_cpu_s']:.2f}, PBE0 "
                f"{res['PBE0']['grad_cpu_s']:.2f})")
        print(line, flush=True)
        lines.append(line)
        line = (f"{name:12s} wall: CIDER gradient / PBE gradient {ratios['grad_cider_over_pbe']:.2f}, "
                f"/ PBE0 gradient {ratios['grad_cider_over_pbe0']:.2f}; CIDER SCF / PBE SCF "
                f"{ratios['scf_cider_over_pbe']:.2f}, / PBE0 SCF "
                f"{ratios['scf_cider_over_pbe0']:.2f}; |grad(resp) - grad| "
                f"{c['grad_response_minus_grad']:.1e}")
        print(line, flush=True)
        lines.append(line)
    write_report(args.out, payload, lines, final=True)


if __name__ == "__main__":
    main()
