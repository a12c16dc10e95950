"""CiderXC under MPI: SCF wall time and peak memory per rank, serial against
``mpiexec -n N`` (MPICH, GPAW built by install.sh), next to GPAW's r2SCAN.

Si in the 8-atom cubic cell (a = 5.431 A, PW(300), 2x2x2 k-points), the
64-atom 2x2x2 or the 216-atom 3x3x3 supercell of it (Gamma),
``convergence={'energy': 1e-6}`` with GPAW's other defaults, legacy
calculator, ``txt`` to a file, at most ``--maxiter`` SCF iterations (a run
that stops there is reported as not converged, with its time per
iteration).  Each run is a separate process (``--worker``); under MPI the
peak resident set size (``ru_maxrss``) of every rank is gathered.  Layouts:
serial, GPAW's default for 2 ranks, and ``parallel={'domain': 2}``
(``--layouts`` for others).  With domain decomposition CiderXC computes its
FFT features on slabs of the fine grid distributed over the domain ranks
(no rank holds the whole grid) and shares the PAW on-site evaluations out
over them.

    python benchmarks/gpaw_mpi.py --systems si8 --functionals CIDER r2SCAN

The development machine has 2 cores shared with other developers' jobs:
timings are noisy (the results file records the load average before and
after every run).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def worker(system, functional, layout, txt, maxiter):
    import resource

    import numpy as np
    from ase.build import bulk
    from gpaw import GPAW, PW
    from gpaw.mpi import world

    si = bulk("Si", "diamond", 5.431, cubic=True)
    kpts = (2, 2, 2)
    if system in ("si64", "si216"):
        si = si.repeat((2, 2, 2) if system == "si64" else (3, 3, 3))
        kpts = (1, 1, 1)
    if functional == "CIDER":
        from cider_xc.gpaw import CiderXC
        xc = CiderXC()
    elif functional == "r2SCAN":
        xc = "MGGA_X_R2SCAN+MGGA_C_R2SCAN"
    else:
        xc = functional
    si.calc = GPAW(mode=PW(300), xc=xc, kpts=kpts, txt=txt, legacy_gpaw=True,
                   convergence={"energy": 1e-6}, parallel=layout, maxiter=maxiter)
    from gpaw import KohnShamConvergenceError
    t0 = time.perf_counter()
    try:
        e = si.get_potential_energy()
        converged = True
    except KohnShamConvergenceError:
        e = float(si.calc.hamiltonian.e_total_extrapolated) * 27.211386245988
        converged = False
    wall = time.perf_counter() - t0
    calc = si.calc
    rss = np.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0])  # MiB
    all_rss = np.zeros(world.size)
    all_rss[world.rank] = rss[0]
    world.sum(all_rss)
    niter = calc.scf.niter if getattr(calc, "scf", None) is not None else None
    xct = getattr(calc.hamiltonian.xc, "timings", None)
    out = {"system": system, "functional": functional, "layout": layout,
           "ranks": world.size, "energy_eV": e, "wall_s": wall, "iterations": niter,
           "converged": converged, "maxiter": maxiter,
           "cider_xc_s_per_call": (xct["features"] / max(xct["calls"], 1)) if xct else None,
           "cider_timings": dict(xct) if xct else None,
           "peak_rss_MiB_per_rank": all_rss.tolist(),
           "domain": calc.wfs.gd.comm.size, "kpt": calc.wfs.kd.comm.size,
           "band": calc.wfs.bd.comm.size}
    if world.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def launch(system, functional, ranks, layout, txtdir, maxiter):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    tag = f"{system}_{functional}_{ranks}_{'_'.join(f'{k}{v}' for k, v in layout.items())}"
    args = ["--worker", system, functional, json.dumps(layout), str(txtdir / f"{tag}.txt"),
            str(maxiter)]
    if ranks == 1:
        cmd = [sys.executable, __file__] + args
    else:
        # GPAW 26 runs MPI from plain python with GPAW_MPI_BACKEND=cgpaw
        # (`gpaw python` would parse --worker itself)
        mpiexec = shutil.which("mpiexec.mpich") or shutil.which("mpiexec")
        env["GPAW_MPI_BACKEND"] = "cgpaw"
        cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__] + args
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    total = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][0]
    res = json.loads(line[7:])
    res.update(process_s=total, load_before=load0, load_after=os.getloadavg()[0])
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=5, metavar=("SYSTEM", "XC", "LAYOUT", "TXT", "MAXITER"))
    ap.add_argument("--systems", nargs="+", default=["si8"], choices=["si8", "si64", "si216"])
    ap.add_argument("--maxiter", type=int, default=60)
    ap.add_argument("--functionals", nargs="+", default=["CIDER", "r2SCAN"])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--layouts", default=None,
                    help='JSON list of [ranks, parallel] pairs (default: serial, N ranks with '
                         'GPAW\'s default layout, N ranks with domain N)')
    ap.add_argument("--previous", default=None,
                    help="file with RESULT JSON lines of earlier runs to include in the table")
    ap.add_argument("--out-prefix", default=str(HERE / "results_gpaw_mpi"))
    ap.add_argument("--txt-dir", default="/tmp/bench/gpaw_mpi")
    args = ap.parse_args(argv)
    if args.worker:
        system, functional, layout, txt, maxiter = args.worker
        worker(system, functional, json.loads(layout), txt, int(maxiter))
        return
    txtdir = Path(args.txt_dir)
    txtdir.mkdir(parents=True, exist_ok=True)
    results = []
    if args.previous:
        for ln in Path(args.previous).read_text().splitlines():
            if ln.startswith("{"):
                results.append(json.loads(ln))
    layouts = ([(1, {}), (args.ranks, {}), (args.ranks, {"domain": args.ranks})]
               if args.layouts is None else [tuple(x) for x in json.loads(args.layouts)])
    for system in args.systems:
        for functional in args.functionals:
            for ranks, layout in layouts:
                r = launch(system, functional, ranks, layout, txtdir, args.maxiter)
                results.append(r)
                print(json.dumps(r), flush=True)
    lines = ["# benchmarks/gpaw_mpi.py: Si, PW(300), convergence energy 1e-6, legacy GPAW,",
             "# MPICH; OMP/NUMBA/OpenBLAS threads 1.  2-core machine SHARED with other",
             "# developers' jobs (load average before/after each run below): noisy timings.",
             "# CiderXC() = the shipped default model.  conv: SCF converged within maxiter;",
             "# XC s/call: CiderXC's whole grid XC call (FFT features, kernel, adjoint, PAW",
             "# on-site terms, GPAW's meta-GGA work inside it), per call.",
             "",
             f"{'system':6} {'xc':7} {'ranks':>5} {'layout':>18} {'iter':>4} {'conv':>4} "
             f"{'SCF s':>8} {'s/iter':>7} {'speed-up':>8} {'XC s/call':>9} "
             f"{'peak RSS MiB/rank':>22} {'load':>9} {'E (eV)':>14}"]
    for r in results:
        ser = next((x for x in results if x["system"] == r["system"]
                    and x["functional"] == r["functional"] and x["ranks"] == 1), r)
        lay = f"d{r['domain']} k{r['kpt']} b{r['band']}"
        it = r["iterations"] or 0
        rss = "/".join(f"{x:.0f}" for x in r["peak_rss_MiB_per_rank"])
        conv = {True: "yes", False: "NO", None: "-"}[r.get("converged")]
        xcs = r.get("cider_xc_s_per_call")
        xcs = f"{xcs:9.2f}" if xcs is not None else f"{'-':>9}"
        lines.append(f"{r['system']:6} {r['functional']:7} {r['ranks']:5d} {lay:>18} {it:4d} "
                     f"{conv:>4} {r['wall_s']:8.1f} {r['wall_s'] / max(it, 1):7.2f} "
                     f"{ser['wall_s'] / r['wall_s']:8.2f} {xcs} {rss:>22} "
                     f"{r['load_before']:4.1f}/{r['load_after']:<4.1f} {r['energy_eV']:14.6f}")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out_prefix + ".txt").write_text(text)
    Path(args.out_prefix + ".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
