"""Si8 side by side, as a user runs each functional in GPAW: CIDER against
GPAW's PBE0, r2SCAN and PBE in one run (issue 21's PBE0/CIDER goal).

Si in the 8-atom cubic cell (a = 5.431 A), PW(300), 2x2x2 k-points,
``convergence={'energy': 1e-6}`` and GPAW's other defaults, one process,
OMP/NUMBA/OpenBLAS threads 1, every SCF in its own subprocess, one after the
other.  Each functional goes through plain ``GPAW(...)``, which picks the
driver: the new one for the strings 'PBE0' and 'PBE', the legacy one for an
XC object such as ``CiderXC()`` (GPAW 26 does that by itself).  r2SCAN runs
both ways (the string picks the new driver; the MPI benchmark uses the
legacy one, ``legacy_gpaw=True``).  Reported per SCF: wall time of
``get_potential_energy`` (including initialisation), SCF iterations (the
``iter:`` lines of GPAW's log), time per iteration, peak RSS, and the ratios
PBE0/CIDER and CIDER/r2SCAN, whole SCF and per iteration.

    .venv/bin/python benchmarks/gpaw_pbe0_si8.py     # about 3 min on a quiet machine

Results: benchmarks/results_gpaw_pbe0_si8.txt and .json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results_gpaw_pbe0_si8"
RUNS = ["PBE", "r2SCAN", "r2SCAN-legacy", "CIDER", "PBE0"]


def worker(name, txt):
    import resource

    from ase.build import bulk
    from gpaw import GPAW, PW

    si = bulk("Si", "diamond", 5.431, cubic=True)
    kw = {}
    if name == "CIDER":
        from cider_xc.gpaw import CiderXC
        xc = CiderXC()
    elif name.startswith("r2SCAN"):
        xc = "MGGA_X_R2SCAN+MGGA_C_R2SCAN"
        if name == "r2SCAN-legacy":
            kw["legacy_gpaw"] = True
    else:
        xc = name
    si.calc = GPAW(mode=PW(300), xc=xc, kpts=(2, 2, 2), txt=txt,
                   convergence={"energy": 1e-6}, **kw)
    t0 = time.perf_counter()
    e = si.get_potential_energy()
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    driver = "legacy" if type(si.calc).__module__.startswith("gpaw.old") else "new"
    print("RESULT " + json.dumps({"name": name, "energy_eV": float(e), "wall_s": wall,
                                  "peak_rss_MiB": rss, "driver": driver}), flush=True)


def iterations(txt):
    """SCF iterations in a GPAW log: ``iter:`` lines (legacy driver) or
    ``|iter:`` table rows (new driver)."""
    return sum(1 for ln in Path(txt).read_text().splitlines()
               if ln.startswith(("iter:", "|iter:")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("NAME", "TXT"))
    ap.add_argument("--runs", nargs="+", default=RUNS, choices=RUNS)
    ap.add_argument("--txt-dir", default="/tmp/bench/gpaw_pbe0_si8")
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    txtdir = Path(args.txt_dir)
    txtdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    res = {}
    for name in args.runs:
        txt = txtdir / f"{name}.txt"
        load0 = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--worker", name, str(txt)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
        r = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])
        r.update(iterations=iterations(txt), load_before=load0, load_after=os.getloadavg()[0])
        res[name] = r
        print(json.dumps(r), flush=True)
    lines = ["Si8 (cubic, a = 5.431 A), PW(300), 2x2x2 k, convergence energy 1e-6 and GPAW's "
             "other defaults; plain GPAW(...) (it picks the driver), one process, threads 1; "
             "each SCF in its own process, one after the other",
             "", f"{'xc':14} {'driver':>6} {'iter':>4} {'SCF s':>8} {'s/iter':>7} "
             f"{'RSS MiB':>8} {'load':>9} {'E (eV)':>14}"]
    for name, r in res.items():
        lines.append(f"{name:14} {r['driver']:>6} {r['iterations']:4d} {r['wall_s']:8.1f} "
                     f"{r['wall_s'] / max(r['iterations'], 1):7.2f} {r['peak_rss_MiB']:8.0f} "
                     f"{r['load_before']:4.1f}/{r['load_after']:<4.1f} {r['energy_eV']:14.6f}")
    lines.append("")

    def ratio(a, b):
        if a not in res or b not in res:
            return None
        ra, rb = res[a], res[b]
        return (ra["wall_s"] / rb["wall_s"],
                (ra["wall_s"] / max(ra["iterations"], 1)) / (rb["wall_s"] / max(rb["iterations"], 1)))

    summary = {}
    for a, b, goal in (("PBE0", "CIDER", "goal >= 10"), ("CIDER", "r2SCAN", "goal <= 1.5"),
                       ("CIDER", "r2SCAN-legacy", "goal <= 1.5"), ("CIDER", "PBE", "")):
        q = ratio(a, b)
        if q is None:
            continue
        summary[f"{a}/{b}"] = {"whole_scf": q[0], "per_iteration": q[1]}
        lines.append(f"{a}/{b}: whole SCF {q[0]:.2f}, per iteration {q[1]:.2f}"
                     + (f" ({goal}, whole SCF)" if goal else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    Path(str(OUT) + ".txt").write_text(text)
    Path(str(OUT) + ".json").write_text(json.dumps({"runs": res, "ratios": summary},
                                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
