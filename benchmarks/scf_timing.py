"""SCF wall time and peak memory of CIDER against PBE, r2SCAN and PBE0 on
water clusters.

The shipped default functional (``cider_xc.load()``); def2-SVP, grid level 3,
density fitting (PySCF's default auxiliary basis for the J build), RKS, the
same geometry for every method.  Every (size, method) SCF runs in its own
subprocess, one after the other (one process at a time), so that its peak
RSS is its own; the thread counts (OMP_NUM_THREADS, NUMBA_NUM_THREADS) are
set for the subprocesses from --threads.  Printed and written:

* wall times of the four SCFs, CIDER's ratios to r2SCAN and PBE0, SCF cycles;
* the nonlocal step per CIDER cycle (features = exponents + forward
  convolution, adjoint, density fit D -> c and dE/dc -> V) and its share of
  the CIDER cycle, and its growth exponent between the two largest sizes
  (8 -> 32 waters when both are run);
* peak RSS of every SCF;
* the profile of a CIDER cycle (features, model F_x, adjoint, fit, libxc part,
  AO work, the rest of PySCF's SCF: J build, diagonalisation, ...).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/scf_timing.py \
        [--sizes 1 2 4 8 16] [--basis def2-svp] [--threads 1] [--readme]

Results: benchmarks/results_scf_timing.json and .txt; --readme rewrites the
table of the README's "Speed (PySCF)" section from the results file
(``--readme-only`` does that without running anything).
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results_scf_timing"
README = HERE.parent / "README.md"
METHODS = ["PBE", "r2SCAN", "PBE0", "CIDER"]

WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


def water_cluster(n, spacing=2.9, seed=7):
    """n water molecules on a cubic lattice (Angstrom), random orientations."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    sites = [np.array([i, j, k]) * spacing for i in range(side) for j in range(side)
             for k in range(side)][:n]
    atoms = []
    for s in sites:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        for sym, x in zip("OHH", WATER @ q.T + s):
            atoms.append((sym, tuple(x)))
    return atoms


def run(mol, xc):
    """One SCF: energy, wall time, cycles, converged, CIDER timings (or None)."""
    from pyscf import dft
    mf = dft.RKS(mol).density_fit()
    mf.grids.level = 3
    mf.xc = xc
    t0, c0 = time.perf_counter(), time.process_time()
    e = mf.kernel()
    t, c = time.perf_counter() - t0, time.process_time() - c0
    tim = getattr(mf._numint, "timings", None)
    return e, t, c, int(mf.cycles), bool(mf.converged), tim, mf


def worker(n, method, basis):
    """Run one SCF in this process and print a JSON line."""
    import resource

    from pyscf import gto, lib

    import cider_xc
    fn = cider_xc.load()
    if method == "CIDER":
        # load the cached numba kernels outside the timing
        run(gto.M(atom=water_cluster(1), basis="sto-3g", verbose=0), fn)
    mol = gto.M(atom=water_cluster(n), basis=basis, verbose=0)
    e, t, cpu, cyc, conv, tim, mf = run(mol, fn if method == "CIDER" else method)
    out = {"n": n, "method": method, "nao": mol.nao, "e_tot": float(e), "wall_s": t,
           "cpu_s": cpu,
           "cycles": cyc, "converged": conv, "ngrid": int(mf.grids.weights.size),
           "lib_num_threads": lib.num_threads(),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if tim is not None:
        out["cider_timings"] = {k: float(v) for k, v in tim.items()}
        out["naux_cider"] = int(mf._numint.projector(mol).naux)
    print("RESULT " + json.dumps(out), flush=True)


def run_subprocess(n, method, basis, threads):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["NUMBA_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n), method,
           "--basis", basis]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{method} n={n} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def nonlocal_per_cycle(r, cpu=True):
    """Nonlocal step (features + adjoint + fit) per CIDER XC call, CPU time
    by default (robust on a loaded machine; = wall time on one idle thread)."""
    tim = r["cider_timings"]
    calls = max(tim["calls"], 1)
    c = "cpu_" if cpu else ""
    return (tim[c + "features"] + tim[c + "adjoint"] + tim[c + "fit"]) / calls


# the README table: one row per size, the same columns as in the results file
TABLE_HEADER = ("| waters | nao | PBE s | r2SCAN s | PBE0 s | CIDER s | CIDER/r2SCAN "
                "| CIDER/PBE0 | CIDER/r2SCAN CPU | CIDER/PBE0 CPU | cycles CIDER/r2SCAN "
                "| nonlocal per cycle CPU s | nonlocal share | RSS r2SCAN MB "
                "| RSS CIDER MB |")


def table_lines(results):
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for key in sorted(results, key=int):
        res = results[key]
        if "CIDER" not in res:
            continue
        c = res["CIDER"]

        def get(m, k, fmt):
            return format(res[m][k], fmt) if m in res else "-"

        def ratio(m, k):
            return f"{c[k] / res[m][k]:.2f}" if m in res else "-"

        def cycles(m):
            return str(res[m]["cycles"]) if m in res else "-"

        per_cycle = c["cider_timings"]["cpu_total"] / max(c["cider_timings"]["calls"], 1)
        nl = nonlocal_per_cycle(c)
        lines.append(
            f"| {int(key)} | {c['nao']} | {get('PBE', 'wall_s', '.2f')} "
            f"| {get('r2SCAN', 'wall_s', '.2f')} | {get('PBE0', 'wall_s', '.2f')} "
            f"| {c['wall_s']:.2f} | {ratio('r2SCAN', 'wall_s')} | {ratio('PBE0', 'wall_s')} "
            f"| {ratio('r2SCAN', 'cpu_s')} | {ratio('PBE0', 'cpu_s')} "
            f"| {c['cycles']}/{cycles('r2SCAN')} | {nl:.3f} | {nl / per_cycle:.2f} "
            f"| {get('r2SCAN', 'peak_rss_mb', '.0f')} | {c['peak_rss_mb']:.0f} |")
    return lines


def profile_lines(results):
    keys = ("features", "model", "adjoint", "fit", "semilocal", "ao")
    lines = ["Profile of a CIDER SCF, CPU seconds per CIDER XC call (nr_rks): features = "
             "exponents + forward convolution, model = F_x, adjoint = dE/dG -> dE/dc, "
             "fit = D -> c and dE/dc -> V, semilocal = libxc part, ao = density on the "
             "grid + AO values + potential matrix; rest of SCF = (SCF CPU - XC calls) "
             "per call (J build, diagonalisation, DIIS, grids, CIDER's auxiliary basis "
             "setup):",
             f"{'waters':>6s} {'calls':>5s} " + " ".join(f"{k:>9s}" for k in keys)
             + f" {'XC call':>9s} {'rest/call':>9s}"]
    for key in sorted(results, key=int):
        c = results[key].get("CIDER")
        if c is None:
            continue
        tim = c["cider_timings"]
        calls = int(max(tim["calls"], 1))
        rest = (c["cpu_s"] - tim["cpu_total"]) / calls
        lines.append(f"{int(key):6d} {calls:5d} " + " ".join(
            f"{tim['cpu_' + k] / calls:9.3f}" for k in keys)
            + f" {tim['cpu_total'] / calls:9.3f} {rest:9.3f}")
    return lines


def summary_lines(results):
    lines = []
    sizes = sorted((int(k) for k, r in results.items() if "CIDER" in r))
    if len(sizes) >= 2:
        # 8 -> 32 waters (the goal's range) when both were run, else the two
        # largest sizes
        n0, n1 = (8, 32) if {8, 32} <= set(sizes) else (sizes[-2], sizes[-1])
        if n1 > n0:
            t0 = nonlocal_per_cycle(results[str(n0)]["CIDER"])
            t1 = nonlocal_per_cycle(results[str(n1)]["CIDER"])
            lines.append(f"nonlocal step per cycle grows as N^{np.log(t1 / t0) / np.log(n1 / n0):.2f}"
                         f" from {n0} to {n1} waters ({t0:.3f} s -> {t1:.3f} s)")
    cheaper = [s for s in sizes if all(m in results[str(s)] for m in METHODS)
               and results[str(s)]["CIDER"]["cpu_s"] < results[str(s)]["PBE0"]["cpu_s"]]
    lines.append("CIDER SCF cheaper than PBE0 (CPU time) at: "
                 + (", ".join(str(s) for s in cheaper) if cheaper else "none of these sizes")
                 + " waters")
    return lines


def write_results(payload, prefix):
    prefix = Path(prefix)
    Path(str(prefix) + ".json").write_text(json.dumps(payload, indent=1) + "\n")
    res = payload["results"]
    lines = [f"CIDER functional: {payload['functional']}",
             f"basis {payload['basis']}, grid level 3, RKS, density fitting; one process; "
             f"threads: {payload['threads']}; wall and CPU times of whole SCFs (s), each "
             "SCF in its own subprocess (peak RSS of that process); with one thread the "
             "CPU time is the wall time of an idle machine, and the CPU ratios are the "
             "robust ones on a loaded machine",
             f"machine: {payload['machine']}; load average before/after the run: "
             f"{payload.get('load_before')} / {payload.get('load_after')} (shared 2-core "
             "machine: absolute times are noisy, ratios come from one run)",
             ""] + table_lines(res) + [""] + summary_lines(res) + [""] + profile_lines(res)
    notes = payload.get("notes")
    if notes:
        lines += [""] + notes
    text = "\n".join(lines) + "\n"
    Path(str(prefix) + ".txt").write_text(text)
    return text


def update_readme(prefix=OUT, readme=README):
    """Replace the table of the README's PySCF speed section with the one of
    the results file."""
    text = Path(str(prefix) + ".txt").read_text().splitlines()
    table = [ln for ln in text if ln.startswith("|")]
    src = Path(readme).read_text()
    sec = src.index("## Speed (PySCF)")
    end = src.index("\n## ", sec + 1)
    body = src[sec:end]
    m = re.search(r"(?m)^\|.*\|\n(?:\|.*\|\n)*", body)   # the first block of table lines
    if m is None:
        raise RuntimeError("no table in the README's Speed (PySCF) section")
    body = body[:m.start()] + "\n".join(table) + "\n" + body[m.end():]
    Path(readme).write_text(src[:sec] + body + src[end:])


KERNELS_OUT = HERE / "results_scf_timing_kernels"


@numba.njit(parallel=True, cache=True)
def _live_terms(coords, a, centers, zetas, cutoff):
    """Per point: the (shell, feature) terms with zeta a / (zeta + a) |r - R|^2
    <= cutoff (the terms every kernel computes), shape (N,)."""
    N = coords.shape[0]
    out = np.zeros(N, dtype=np.int64)
    for g in numba.prange(N):
        k = 0
        for s in range(zetas.shape[0]):
            d2 = ((coords[g] - centers[s]) ** 2).sum()
            for f in range(a.shape[0]):
                af = a[f, g]
                z = zetas[s]
                if z * af / (z + af) * d2 <= cutoff:
                    k += 1
        out[g] = k
    return out


def kernel_profile(sizes, basis, out=KERNELS_OUT):
    """The nonlocal step alone (no SCF), on the MINAO initial-guess density of
    each cluster and the SCF's grid (level 3): CPU seconds of one call of
    exponents + forward convolution, adjoint, and the fit (D -> c and
    dE/dc -> V), the projector setup, and where the work lies: the mean
    number of (shell, feature) terms per point and their split by the
    point's smallest exponent a_0 (with the share of |e_x^LDA| w there); and
    the CPU time of the post-SCF domain check on that density."""
    from pyscf import gto

    import cider_xc
    from cider_xc.descriptors.convolution import EXP_CUTOFF
    fn = cider_xc.load()
    # compile/load the kernels outside the timings
    kernel_profile_one(gto.M(atom=water_cluster(1), basis="sto-3g", verbose=0), fn, None)
    payload = {"functional": fn.describe(), "basis": basis, "grid_level": 3,
               "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",
                                                           "NUMBA_NUM_THREADS")},
               "load_before": [round(x, 2) for x in os.getloadavg()], "results": {}}
    for n in sizes:
        mol = gto.M(atom=water_cluster(n), basis=basis, verbose=0)
        payload["results"][str(n)] = kernel_profile_one(mol, fn, EXP_CUTOFF)
        payload["load_after"] = [round(x, 2) for x in os.getloadavg()]
        Path(str(out) + ".json").write_text(json.dumps(payload, indent=1) + "\n")
        print(json.dumps(payload["results"][str(n)]), flush=True)
    res = payload["results"]
    lines = [f"CIDER functional: {payload['functional']}",
             f"The nonlocal step alone, {basis}, grid level 3, MINAO initial-guess density, "
             f"threads {payload['threads']}; CPU seconds of one call; load average "
             f"{payload['load_before']} / {payload.get('load_after')}",
             "",
             f"{'waters':>6s} {'ngrid':>7s} {'naux':>5s} {'setup':>7s} {'forward':>8s} "
             f"{'adjoint':>8s} {'fit':>6s} {'step':>7s} {'terms/pt':>8s} {'of':>5s} "
             f"{'domain check':>12s}"]
    for k in sorted(res, key=int):
        r = res[k]
        lines.append(f"{int(k):6d} {r['ngrid']:7d} {r['naux']:5d} {r['setup_s']:7.2f} "
                     f"{r['forward_s']:8.3f} {r['adjoint_s']:8.3f} {r['fit_s']:6.3f} "
                     f"{r['step_s']:7.3f} {r['terms_per_point']:8.0f} {r['terms_total']:5d} "
                     f"{r['domain_check_s']:12.2f}")
    ks = sorted(res, key=int)
    for k0, k1 in zip(ks[:-1], ks[1:]):
        e = np.log(res[k1]["step_s"] / res[k0]["step_s"]) / np.log(int(k1) / int(k0))
        lines.append(f"nonlocal step grows as N^{e:.2f} from {k0} to {k1} waters")
    lines += ["", "where the work lies: points by their smallest exponent a_0 (bohr^-2): "
              "share of points, share of the kernel terms, terms per point, share of "
              "sum |w e_x^LDA|"]
    for k in ks:
        for band in res[k]["bands"]:
            lines.append(f"{int(k):6d}  a_0 in [{band['lo']:g}, {band['hi']:g}): points "
                         f"{band['points']:.2f}, terms {band['work']:.2f}, terms/point "
                         f"{band['terms_per_point']:.0f}, |e_x^LDA| {band['ex_lda']:.1e}")
    Path(str(out) + ".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def kernel_profile_one(mol, fn, cutoff):
    from pyscf import dft

    from cider_xc.pyscf.dfaux import DensityProjector
    mf = dft.RKS(mol)
    mf.grids.level = 3
    mf.grids.build()
    dm = mf.get_init_guess(key="minao")
    c0 = time.process_time()
    proj = DensityProjector(mol)
    setup = time.process_time() - c0
    coords, w = mf.grids.coords, mf.grids.weights
    ni = dft.numint.NumInt()
    rho = np.concatenate([ni.eval_rho(mol, ni.eval_ao(mol, coords[i:i + 20000], deriv=1),
                                      dm, xctype="MGGA")
                          for i in range(0, len(coords), 20000)], axis=1)
    n, grad, tau = rho[0], rho[1:4], rho[4]
    sigma = np.einsum("xg,xg->g", grad, grad)
    gs = proj.gaussians
    c0 = time.process_time()
    c = proj.coefficients(dm)
    t_fit = time.process_time() - c0
    c0 = time.process_time()
    a, _ = fn.chain.exponents(n, sigma, tau)
    G, dG = gs.convolve(coords, a, c)
    t_fwd = time.process_time() - c0
    u = np.random.default_rng(0).normal(size=a.shape) * w
    c0 = time.process_time()
    dc = gs.convolve_adjoint(coords, a, u)
    t_adj = time.process_time() - c0
    c0 = time.process_time()
    proj.potential(dc)
    t_fit += time.process_time() - c0
    if cutoff is None:
        return None
    # the post-SCF domain check (cider_xc.pyscf.domain): features and GP
    # standard deviation on this density, the projector already built
    from cider_xc.pyscf.features import uncertainty_report
    mf.xc = fn
    mf._numint.projector(mol)
    fn.gp.pop("var_matrix", None)
    c0 = time.process_time()
    uncertainty_report(mf, dm=dm)
    t_dom = time.process_time() - c0
    cnt = _live_terms(coords, a, gs.centers, gs.zeta, cutoff)
    ex = np.abs(w * n ** (4.0 / 3.0))
    bands = []
    for lo, hi in ((0, 0.05), (0.05, 0.2), (0.2, 1.0), (1.0, np.inf)):
        m = (a[0] >= lo) & (a[0] < hi)
        bands.append({"lo": lo, "hi": hi if np.isfinite(hi) else 1e300,
                      "points": float(m.mean()), "work": float(cnt[m].sum() / cnt.sum()),
                      "terms_per_point": float(cnt[m].mean()) if m.any() else 0.0,
                      "ex_lda": float(ex[m].sum() / ex.sum())})
    return {"n": mol.natm // 3, "nao": mol.nao, "naux": proj.naux, "ngrid": len(coords),
            "setup_s": setup, "forward_s": t_fwd, "adjoint_s": t_adj, "fit_s": t_fit,
            "step_s": t_fwd + t_adj + t_fit, "domain_check_s": t_dom,
            "terms_per_point": float(cnt.mean()),
            "terms_total": int(len(gs.zeta) * a.shape[0]), "bands": bands}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--basis", default="def2-svp")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS and NUMBA_NUM_THREADS of the SCF processes "
                         "(0: leave the environment alone)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--readme", action="store_true",
                    help="rewrite the README speed table from the results at the end")
    ap.add_argument("--readme-only", action="store_true",
                    help="rewrite the results .txt from the .json and the README table "
                         "from it, running nothing")
    ap.add_argument("--append", action="store_true",
                    help="add these sizes to the existing results file (same settings)")
    ap.add_argument("--kernels", action="store_true",
                    help="time the nonlocal step alone (no SCF) on the MINAO density of "
                         "each size: results_scf_timing_kernels.json/.txt")
    ap.add_argument("--worker", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], args.basis)
        return
    if args.kernels:
        kernel_profile(args.sizes, args.basis, args.out if args.out != str(OUT) else KERNELS_OUT)
        return
    if args.readme_only:
        # the results file again from the JSON (this script's current layout)
        write_results(json.loads(Path(args.out + ".json").read_text()), args.out)
        update_readme(args.out)
        return
    import cider_xc
    fn = cider_xc.load()
    payload = {"functional": fn.describe(), "basis": args.basis, "grid_level": 3,
               "density_fit": True,
               "threads": {"OMP_NUM_THREADS": args.threads or os.environ.get("OMP_NUM_THREADS"),
                           "NUMBA_NUM_THREADS": args.threads
                           or os.environ.get("NUMBA_NUM_THREADS")},
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "load_before": [round(x, 2) for x in os.getloadavg()], "results": {}}
    if args.append and Path(args.out + ".json").exists():
        old = json.loads(Path(args.out + ".json").read_text())
        for k in ("functional", "basis", "threads"):
            if old.get(k) != json.loads(json.dumps(payload[k])):
                raise SystemExit(f"--append: {k} differs from the results file")
        payload["results"] = old["results"]
        payload["load_before"] = old.get("load_before")
        payload["elapsed_s_before"] = old.get("elapsed_s", 0.0) + old.get("elapsed_s_before", 0.0)
    t_start = time.perf_counter()
    print(f"functional: {fn.describe()}; threads {payload['threads']}", flush=True)
    for n in args.sizes:
        res = payload["results"].setdefault(str(n), {})
        for m in args.methods:
            r = run_subprocess(n, m, args.basis, args.threads)
            res[m] = r
            extra = ""
            if m == "CIDER":
                extra = (f"  nonlocal/cycle {nonlocal_per_cycle(r):.3f} s, "
                         f"{int(r['cider_timings']['calls'])} XC calls")
            print(f"n={n:3d} {m:7s} {r['wall_s']:9.2f} s (CPU {r['cpu_s']:8.2f} s) "
                  f"{r['cycles']:3d} cycles  "
                  f"RSS {r['peak_rss_mb']:7.0f} MB  E={r['e_tot']:.8f}"
                  f"{'' if r['converged'] else '  NOT CONVERGED'}{extra}", flush=True)
            payload["load_after"] = [round(x, 2) for x in os.getloadavg()]
            payload["elapsed_s"] = time.perf_counter() - t_start
            write_results(payload, args.out)
    print()
    print(write_results(payload, args.out), end="")
    print(f"(this run: {time.perf_counter() - t_start:.0f} s)")
    if args.readme:
        update_readme(args.out)


if __name__ == "__main__":
    main()
