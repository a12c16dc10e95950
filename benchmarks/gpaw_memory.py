"""Where CiderXC's memory goes in GPAW: numpy allocations by source line,
and the peak memory of every MPI rank.

Si in the 64-atom cubic supercell (PW(300), Gamma, the settings of
benchmarks/gpaw_mpi.py), CiderXC() (the shipped default), a few SCF
iterations.  Under ``tracemalloc`` (default; numpy reports its buffers to
it) the arrays still alive after the last XC call are grouped by the source
line that allocated them, and the peak of the traced memory over the whole
run is printed (tracemalloc's own bookkeeping inflates the process RSS; the
traced sizes are the arrays themselves).  ``--no-trace`` runs without
tracemalloc and reports only the peak RSS (resource.getrusage) per rank.

Runs serially or under MPI (then with ``parallel={'domain': N}`` on N ranks,
each rank tracing itself; the per-rank numbers are gathered on rank 0, the
allocation lines are rank 0's):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpaw_memory.py --iterations 3
    OMP_NUM_THREADS=1 GPAW_MPI_BACKEND=cgpaw mpiexec -n 2 .venv/bin/python \\
        benchmarks/gpaw_memory.py --iterations 3 --out benchmarks/results_gpaw_memory_2ranks.txt

(plain python with GPAW_MPI_BACKEND=cgpaw: ``gpaw python`` would parse the
options itself).
Writes the text to --out (default results_gpaw_memory.txt next to this
script) and the per-rank numbers to the same name with .json.
"""
import argparse
import json
import linecache
import resource
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="si64", choices=["si8", "si64"])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-trace", action="store_true",
                    help="no tracemalloc: only the peak RSS per rank")
    ap.add_argument("--label", default="", help="a note for the header (e.g. the commit)")
    ap.add_argument("--out", default=str(HERE / "results_gpaw_memory.txt"))
    args = ap.parse_args(argv)
    trace = not args.no_trace
    if trace:
        tracemalloc.start(1)
    import numpy as np
    from ase.build import bulk
    from gpaw import GPAW, PW, KohnShamConvergenceError
    from gpaw.mpi import world

    import cider_xc.gpaw.xc as X
    from cider_xc.gpaw import CiderXC

    si = bulk("Si", "diamond", 5.431, cubic=True)
    kpts = (2, 2, 2)
    if args.system == "si64":
        si, kpts = si.repeat((2, 2, 2)), (1, 1, 1)
    snaps = []
    orig = X.CiderXC.calculate_impl

    def traced(self, gd, n_sg, v_sg, e_g):
        out = orig(self, gd, n_sg, v_sg, e_g)
        if trace:
            snaps[:] = [tracemalloc.take_snapshot()]
        return out

    X.CiderXC.calculate_impl = traced
    parallel = {"domain": world.size} if world.size > 1 else {}
    si.calc = GPAW(mode=PW(300), xc=CiderXC(), kpts=kpts, txt=None, legacy_gpaw=True,
                   convergence={"energy": 1e-6}, maxiter=args.iterations, parallel=parallel)
    t0 = time.perf_counter()
    try:
        si.get_potential_energy()
    except KohnShamConvergenceError:
        pass
    wall = time.perf_counter() - t0
    cur, peak = tracemalloc.get_traced_memory() if trace else (0, 0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # per-rank numbers (MiB): peak RSS, traced peak, traced alive at the end
    per = np.zeros((world.size, 3))
    per[world.rank] = (rss, peak / 2**20, cur / 2**20)
    world.sum(per)
    if world.rank != 0:
        return 0
    mode = "tracemalloc" if trace else "no tracemalloc"
    ranks = "one process" if world.size == 1 else f"{world.size} MPI ranks, parallel={parallel}"
    import os
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS", "GPAW_MPI_BACKEND")
                   if k in os.environ)
    launcher = f"mpiexec -n {world.size} " if world.size > 1 else ""
    lines = [f"# run: {env} {launcher}python benchmarks/gpaw_memory.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}",
             f"# {args.system}, PW(300), CiderXC() (shipped default), {args.iterations} SCF "
             f"iterations, {ranks}, {mode}" + (f"; {args.label}" if args.label else ""),
             f"# wall {wall:.0f} s" + (" (tracemalloc slows numpy allocation)" if trace else "")]
    for r in range(world.size):
        lines.append(f"rank {r}: peak RSS {per[r, 0]:.0f} MiB"
                     + (f", traced peak {per[r, 1]:.0f} MiB, traced alive at the end "
                        f"{per[r, 2]:.0f} MiB" if trace else ""))
    if trace:
        stats = snaps[0].statistics("lineno")
        root = str(Path(X.__file__).resolve().parents[2])
        lines.append(f"rank 0: alive after the last CiderXC grid call, {len(stats)} source "
                     f"lines, top {args.top} (MiB, arrays, allocating line):")
        for st in stats[:args.top]:
            fr = st.traceback[0]
            name = fr.filename.replace(root + "/", "")
            if "site-packages/" in name:
                name = name.split("site-packages/")[1]
            src = linecache.getline(fr.filename, fr.lineno).strip()[:70]
            lines.append(f"{st.size / 2**20:8.1f} {st.count:8d}  {name}:{fr.lineno}  {src}")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps({
        "system": args.system, "iterations": args.iterations, "ranks": world.size,
        "parallel": parallel, "tracemalloc": trace, "label": args.label, "wall_s": wall,
        "peak_rss_mib": per[:, 0].tolist(),
        "traced_peak_mib": per[:, 1].tolist() if trace else None,
        "traced_alive_mib": per[:, 2].tolist() if trace else None}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
