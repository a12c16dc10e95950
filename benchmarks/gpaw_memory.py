"""Where CiderXC's memory goes in GPAW: numpy allocations by source line.

Si in the 64-atom cubic supercell (PW(300), Gamma, the settings of
benchmarks/gpaw_mpi.py), CiderXC() (the shipped default), a few SCF
iterations, one process, under ``tracemalloc`` (numpy reports its buffers
to it).  After the last XC call the arrays still alive are grouped by the
source line that allocated them, and the peak of the traced memory over
the whole run is printed (tracemalloc's own bookkeeping inflates the
process RSS; the traced sizes are the arrays themselves).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpaw_memory.py --iterations 3

Writes results_gpaw_memory.txt next to this script.
"""
import argparse
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
    ap.add_argument("--out", default=str(HERE / "results_gpaw_memory.txt"))
    args = ap.parse_args(argv)
    tracemalloc.start(1)
    from ase.build import bulk
    from gpaw import GPAW, PW, KohnShamConvergenceError

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
        snaps[:] = [tracemalloc.take_snapshot()]
        return out

    X.CiderXC.calculate_impl = traced
    si.calc = GPAW(mode=PW(300), xc=CiderXC(), kpts=kpts, txt=None, legacy_gpaw=True,
                   convergence={"energy": 1e-6}, maxiter=args.iterations)
    t0 = time.perf_counter()
    try:
        si.get_potential_energy()
    except KohnShamConvergenceError:
        pass
    wall = time.perf_counter() - t0
    cur, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    stats = snaps[0].statistics("lineno")
    root = str(Path(X.__file__).resolve().parents[2])
    lines = [f"# benchmarks/gpaw_memory.py: {args.system}, PW(300), CiderXC() (shipped default), "
             f"{args.iterations} SCF iterations, one process, tracemalloc",
             f"# wall {wall:.0f} s (tracemalloc slows numpy allocation)",
             f"traced numpy/Python memory: peak {peak / 2**20:.0f} MiB over the run, "
             f"{cur / 2**20:.0f} MiB alive at the end",
             f"process peak RSS with tracemalloc: {rss:.0f} MiB",
             f"alive after the last CiderXC grid call, {stats and len(stats)} source lines, "
             f"top {args.top} (MiB, arrays, allocating line):"]
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


if __name__ == "__main__":
    sys.exit(main())
