"""cProfile of a whole CiderXC SCF in GPAW: where the time per XC call goes.

Si8 cubic (PW(300), 2x2x2 k) or Si64 (Gamma), ``convergence={'energy':
1e-6}``, CiderXC() (the shipped default), one process, legacy calculator.
Prints CiderXC's own split of its grid calls (``CiderXC.timings``) and the
functions with the largest own time, per XC call.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/gpaw_profile.py si8

Writes results_gpaw_profile_<system>.txt next to this script.
"""
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(system="si8", maxiter=60, top=25):
    from ase.build import bulk
    from gpaw import GPAW, PW

    from cider_xc.gpaw import CiderXC

    si = bulk("Si", "diamond", 5.431, cubic=True)
    kpts = (2, 2, 2)
    if system == "si64":
        si, kpts = si.repeat((2, 2, 2)), (1, 1, 1)
    # compile the numba kernels outside the profile
    warm = bulk("Si", "diamond", 5.431)
    warm.calc = GPAW(mode=PW(150), xc=CiderXC(), kpts=(1, 1, 1), maxiter=2, txt=None,
                     legacy_gpaw=True)
    try:
        warm.get_potential_energy()
    except Exception:
        pass
    xc = CiderXC()
    si.calc = GPAW(mode=PW(300), xc=xc, kpts=kpts, txt=None, legacy_gpaw=True,
                   convergence={"energy": 1e-6}, maxiter=maxiter)
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    e = si.get_potential_energy()
    pr.disable()
    wall = time.perf_counter() - t0
    t = xc.timings
    n = max(t["calls"], 1)
    lines = [f"# benchmarks/gpaw_profile.py {system}: PW(300), energy 1e-6, CiderXC() "
             "(shipped default), one process, OMP/NUMBA threads 1, cProfile on (adds overhead)",
             f"SCF {wall:.1f} s, {si.calc.scf.niter} iterations, E = {e:.6f} eV; "
             f"{t['calls']} CiderXC grid calls, {t['features'] / n:.3f} s per call",
             "CiderXC.timings per call (s): " + ", ".join(
                 f"{k} {t[k] / n:.3f}" for k in ("paw_prepare", "grid_kernel", "gpaw_mgga",
                                                 "paw_onsite", "adjoint", "paw_finish")
                 if k in t),
             f"on-site kernel evaluations: {t.get('onsite_evaluated', 0) / n:.1f} of "
             f"{t.get('onsite_atoms', 0) / n:.1f} atoms per call",
             "", f"largest own time (tottime) over the SCF, top {top}, and per CiderXC call:"]
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime")
    root = str(Path(__file__).resolve().parents[1]) + "/"
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (fname, line, func), (cc, nc, tt, ct, callers) in rows:
        name = fname.replace(root, "")
        if "site-packages/" in name:
            name = name.split("site-packages/")[1]
        lines.append(f"{tt:8.2f} s {tt / n:7.3f} s/call {nc:8d} calls  {name}:{line}({func})")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / f"results_gpaw_profile_{system}.txt").write_text(text)


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["si8"]))
