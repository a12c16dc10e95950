"""The ``cider-xc`` command (ASE-style subcommands, lazy imports)."""
from __future__ import annotations

import argparse
import sys


class InfoCommand:
    """Print what a model file holds."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("model", nargs="?", default=None,
                       help="shipped name or model-file path (None: the shipped default)")

    @staticmethod
    def run(args):
        import json
        import cider_xc
        fn = cider_xc.load(args.model)
        print(f"functional : {fn.describe()}")
        print(f"features   : {', '.join(fn.settings.feature_names)}")
        print(f"settings   : {json.dumps(fn.settings.todict())}")
        size = (f"{len(fn.fx.coefficients)} polynomial terms" if fn.fx.kind == "polynomial"
                else f"{len(fn.fx.weights)} RBF control points, length scale "
                     f"{fn.fx.length_scale:g}")
        print(f"F_x        : {fn.fx.kind}, {size}")
        print(f"bound      : {fn.bound.todict() if fn.bound is not None else 'none'}")
        rng = fn.range_over_box()
        print(f"F_x range  : [{rng['fx_min']:.4f}, {rng['fx_max']:.4f}] over {rng['n_points']} "
              f"points of the whole descriptor box; max |dF_x/dx| = "
              f"{rng['max_abs_dfx_dx']:.3g} (local Lieb-Oxford bound 1.804)")
        print(f"GP uncert. : {'yes' if fn.gp is not None else 'no'}")
        print(f"provenance : {json.dumps(fn.header.get('provenance', {}))}")
        print(f"checksum   : {fn.header.get('checksum')}")


class ScfCommand:
    """SCF of a molecule with a CIDER functional, next to PBE and PBE0."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("geometry", help="geometry file readable by ASE, or a PySCF atom "
                                        "string such as 'H 0 0 0; H 0 0 0.74' (Angstrom)")
        p.add_argument("--model", default=None,
                       help="CIDER functional: shipped name or model file (None: the "
                            "shipped default)")
        p.add_argument("--basis", default="def2-svp", help="orbital basis (PySCF name)")
        p.add_argument("--charge", type=int, default=0, help="total charge")
        p.add_argument("--spin", type=int, default=None,
                       help="2S (None: 0 or 1 from the electron count)")
        p.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (0-9)")
        p.add_argument("--no-compare", action="store_true", help="skip PBE and PBE0")
        p.add_argument("--density-fit", action="store_true",
                       help="density fitting for the Coulomb (and exchange) terms")
        p.add_argument("-v", "--verbose", type=int, default=3, help="PySCF verbosity (0-9)")

    @staticmethod
    def run(args):
        import os
        from pyscf import dft, gto
        import cider_xc
        atom = args.geometry
        if not os.path.exists(atom) and _looks_like_path(atom):
            raise SystemExit(f"cider-xc scf: no such geometry file: {atom} (give a file "
                             "ASE can read, or a PySCF atom string such as "
                             "'H 0 0 0; H 0 0 0.74')")
        if os.path.isdir(atom):
            raise SystemExit(f"cider-xc scf: {atom} is a directory, not a geometry file")
        if os.path.exists(atom):
            try:
                import ase.io
                at = ase.io.read(atom)
            except Exception as exc:
                raise SystemExit(f"cider-xc scf: cannot read geometry {atom}: {exc}")
            atom = [(s, tuple(p)) for s, p in zip(at.get_chemical_symbols(), at.positions)]
        # spin=None lets PySCF take 0 or 1 from the electron count
        mol = gto.M(atom=atom, basis=args.basis, charge=args.charge, spin=args.spin,
                    verbose=args.verbose)
        spin = mol.spin
        fn = cider_xc.load(args.model)
        rows = []
        for label, xc in [("CIDER", fn)] + ([] if args.no_compare else
                                             [("PBE", "PBE"), ("PBE0", "PBE0")]):
            mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
            if args.density_fit:
                mf = mf.density_fit()
            mf.grids.level = args.grid_level
            mf.xc = xc
            if label == "CIDER":
                from cider_xc.pyscf import fallback
                e, used = fallback.kernel(mf)
                if used:
                    print("cider-xc scf: DIIS did not converge; used ADIIS from the PBE "
                          "density")
            else:
                e = mf.kernel()
            rows.append((label, str(xc), e, mf.converged))
        print(f"{'method':8s} {'converged':9s} {'E / Hartree':>18s}  functional")
        for label, desc, e, conv in rows:
            print(f"{label:8s} {str(conv):9s} {e:18.10f}  {desc}")


def _looks_like_path(s):
    """A geometry argument that is meant as a file name (no PySCF atom string
    is a single word, and none contains a path separator)."""
    import os
    return len(s.split()) == 1 and ";" not in s or os.sep in s


def _check_output_dir(d, what):
    """Create directory ``d`` (and its parents) or stop with a clear message;
    refuse one that exists but cannot be written."""
    import os
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"{what} {d}: cannot create the directory ({err.strerror or err})")
    if not os.access(d, os.W_OK | os.X_OK):
        raise SystemExit(f"{what} {d}: the directory is not writable")


def _check_model_output(path, overwrite, what):
    """The model path that will be written, checked before any long work: its
    directory is created if missing and must be writable, and an existing
    file is only replaced with --overwrite."""
    import os
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    if os.path.isdir(path):
        raise SystemExit(f"{what}: the output {path} is a directory")
    if os.path.exists(path) and not overwrite:
        raise SystemExit(f"{what}: the output {path} exists; pass --overwrite to replace "
                         "it, or choose another output")
    _check_output_dir(os.path.dirname(os.path.abspath(path)), f"{what}: output directory")
    return path


def _save_model(path, fn, overwrite):
    """Write the fitted model; if that fails after all (disk full, directory
    removed meanwhile), write it to a fallback file in the working directory
    or the temporary directory, so that a finished fit is never lost.

    Returns (path written, error message or None)."""
    import os
    import tempfile
    import time
    from cider_xc.io import save_functional
    try:
        return save_functional(path, fn, overwrite=overwrite), None
    except OSError as err:
        first = err
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"cider-xc-rescued-{fn.name}-{stamp}-{os.getpid()}.npz"
    for d in (os.getcwd(), tempfile.gettempdir()):
        try:
            saved = save_functional(os.path.join(d, base), fn)
        except OSError:
            continue
        msg = (f"cider-xc: could not write the model to {path} ({first}); the fitted "
               f"model was saved to {saved} instead: move it where it belongs")
        print(msg, file=sys.stderr)
        return saved, msg
    raise first


def _load_config(path):
    """A YAML (.yaml/.yml) or TOML (.toml) training configuration."""
    import os
    if not os.path.isfile(path):
        raise SystemExit(f"cider-xc: no such configuration file {path}")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml
            with open(path) as fh:
                cfg = yaml.safe_load(fh)
        else:
            import tomllib
            with open(path, "rb") as fh:
                cfg = tomllib.load(fh)
    except Exception as exc:
        raise SystemExit(f"cider-xc: cannot parse configuration {path}: {exc}")
    if not isinstance(cfg, dict):
        raise SystemExit(f"cider-xc: configuration {path} is not a mapping")
    base = os.path.dirname(os.path.abspath(path))
    cfg["_base"] = base
    return cfg


def _rel(cfg, p):
    import os
    return p if os.path.isabs(p) else os.path.join(cfg["_base"], p)


def _descriptor_settings(args_like=None, cfg=None):
    from cider_xc.descriptors import DescriptorSettings
    if cfg and "descriptors" in cfg:
        return DescriptorSettings.fromdict(cfg["descriptors"])
    import cider_xc
    return cider_xc.load(getattr(args_like, "like", None) or "test-nl").settings


class GenerateCommand:
    """Compute hybrid reference data (one HDF5 file per system)."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("systems", nargs="+",
                       help="specs: atoms:H-Ar, g2_1, g2_2, g2_2:NAME, geometry files, list.txt")
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--xc", default="PBE0", help="hybrid functional of the reference SCFs")
        p.add_argument("--basis", default="def2-tzvp", help="orbital basis (PySCF name)")
        p.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (0-9)")
        p.add_argument("--no-density-fit", action="store_true",
                       help="exact Coulomb and exchange integrals instead of density fitting")
        p.add_argument("--stability-rounds", type=int, default=3,
                       help="rounds of PySCF's internal stability analysis after each "
                            "hybrid SCF, re-converging an unstable solution (0: no check)")
        p.add_argument("--n-jobs", type=int, default=1, help="worker processes (joblib)")
        p.add_argument("--scheduler", default=None,
                       help="Dask scheduler address (None: run locally)")
        p.add_argument("--like", default=None,
                       help="take descriptor settings from this model (None: test-nl)")

    @staticmethod
    def run(args):
        from cider_xc.training import reference, systems
        syss = systems.resolve(args.systems)
        ref = reference.ReferenceSettings(xc=args.xc, basis=args.basis,
                                          grid_level=args.grid_level,
                                          density_fit=not args.no_density_fit,
                                          stability_rounds=args.stability_rounds)
        idx = reference.generate(syss, args.out, _descriptor_settings(args), ref,
                                 n_jobs=args.n_jobs, scheduler=args.scheduler)
        _report_index(idx)


def _report_index(idx):
    done = [k for k, e in idx.items() if e["status"] == "done"]
    failed = {k: e["error"] for k, e in idx.items() if e["status"] != "done"}
    print(f"{len(done)} systems done, {len(failed)} failed")
    for k, err in failed.items():
        print(f"  FAILED {k}: {err}")
    return failed


class FitCommand:
    """Fit the GP to reference data and write a model file."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("data", help="reference-data directory")
        p.add_argument("--out", required=True, help="model file to write (.npz)")
        p.add_argument("--name", default="cider", help="name stored in the model file")
        p.add_argument("--degree", type=int, default=4,
                       help="polynomial degree (polynomial evaluator only)")
        p.add_argument("--n-control", type=int, default=200, help="GP control points")
        p.add_argument("--cider-x", type=float, default=0.25,
                       help="fraction of CIDER exchange in the functional")
        p.add_argument("--semilocal-xc", default="0.75*GGA_X_PBE, GGA_C_PBE",
                       help="the rest of the functional, a libxc string")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    @staticmethod
    def run(args):
        from cider_xc.training import fit, reference
        out = _check_model_output(args.out, args.overwrite, "cider-xc fit")
        data = reference.load_dataset(args.data)
        fn, report = fit.fit_functional(data, name=args.name, degree=args.degree,
                                        n_control=args.n_control, cider_x=args.cider_x,
                                        semilocal_xc=args.semilocal_xc, verbose=True)
        path, err = _save_model(out, fn, args.overwrite)
        _print_report(report)
        print(f"wrote {path}")
        if err:
            raise SystemExit(err)


def _print_report(report):
    for k, v in report.items():
        print(f"  {k}: {v}")


class EvaluateCommand:
    """Errors of a model against reference data, with a parity plot and an F_x plot."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("model", help="shipped name or model-file path")
        p.add_argument("data", help="reference-data directory")
        p.add_argument("--plots", default="plots", help="directory for the PNG figures")

    @staticmethod
    def run(args):
        import os
        import cider_xc
        from cider_xc.training import fit, plots, reference
        fn = cider_xc.load(args.model)
        data = reference.load_dataset(args.data)
        res = fit.evaluate_exchange(fn, data)
        _print_evaluation(res, args.data)
        p1 = plots.parity_plot(res, os.path.join(args.plots, "parity.png"),
                               title=f"{fn.name} on {os.path.basename(os.path.abspath(args.data))}")
        p2 = plots.enhancement_plot(fn, os.path.join(args.plots, "enhancement.png"))
        print(f"figures: {p1}, {p2}")
        return res


def _print_evaluation(res, label):
    print(f"{label}: {len(res['systems'])} systems, {len(res['atomization'])} atomization energies")
    print(f"  MAE exchange energy   : CIDER {res['mae_ex_cider']:8.3f}  PBE {res['mae_ex_pbe']:8.3f} kcal/mol")
    print(f"  MAE atomization E_x   : CIDER {res['mae_aex_cider']:8.3f}  PBE {res['mae_aex_pbe']:8.3f} kcal/mol")
    if "saturated_weight_fraction" in res:
        worst = max(res["systems"], key=lambda n: res["systems"][n]["saturated"])
        print(f"  F_x bound saturated on {100 * res['saturated_weight_fraction']:.3f}% of the "
              f"exchange weight (worst: {worst}, "
              f"{100 * res['systems'][worst]['saturated']:.2f}%)")


class TrainCommand:
    """generate + fit + evaluate from one YAML or TOML configuration."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("config", help="YAML (.yaml/.yml) or TOML (.toml) configuration")
        p.add_argument("--overwrite", action="store_true", help="replace the output model")

    @staticmethod
    def run(args):
        import os
        from cider_xc.training import fit, plots, reference, systems
        cfg = _load_config(args.config)
        settings = _descriptor_settings(cfg=cfg)
        ref = reference.ReferenceSettings(**cfg.get("reference", {}))
        dcfg = cfg.get("data", {})
        specs = [_rel(cfg, s) if s.endswith(".txt") else s for s in dcfg.get("systems", [])]
        if not specs:
            raise SystemExit("cider-xc train: [data] systems is empty")
        out_dir = _rel(cfg, dcfg.get("directory", "refdata"))
        # every output path is checked (directories created) before the long work
        out = _check_model_output(_rel(cfg, cfg.get("output", cfg.get("name", "cider") + ".npz")),
                                  args.overwrite, "cider-xc train")
        plot_dir = _rel(cfg, cfg.get("plots", "plots"))
        ecfg = cfg.get("evaluate")
        dirs = [("[data] directory", out_dir), ("plots", plot_dir)]
        if ecfg:
            dirs.append(("[evaluate] directory",
                         _rel(cfg, ecfg.get("directory", "refdata-validation"))))
        for what, d in dirs:
            _check_output_dir(d, f"cider-xc train: {what}")
        idx = reference.generate(systems.resolve(specs), out_dir, settings, ref,
                                 n_jobs=dcfg.get("n_jobs", 1),
                                 scheduler=dcfg.get("scheduler") or None)
        failed = _report_index(idx)
        if failed and not dcfg.get("allow_failures", False):
            raise SystemExit("cider-xc train: some systems failed (see above); fix them or "
                             "set allow_failures = true")
        data = reference.load_dataset(out_dir)
        fcfg = dict(cfg.get("fit", {}))
        fn, report = fit.fit_functional(data, name=cfg.get("name", "cider"), verbose=True,
                                        **fcfg)
        # the finished fit is written at once (never lost); the calibration of
        # its out-of-domain warning below rewrites it with that header added
        path, save_error = _save_model(out, fn, args.overwrite)
        print(f"wrote {path}")
        _print_report(report)
        res = fit.evaluate_exchange(fn, data)
        _print_evaluation(res, "training data")
        plots.parity_plot(res, os.path.join(plot_dir, "parity-train.png"))
        plots.enhancement_plot(fn, os.path.join(plot_dir, "enhancement.png"))
        if ecfg:
            # held-out data: errors, and the calibration of the out-of-domain
            # warning (stored in the model file's header)
            especs = [_rel(cfg, s) if s.endswith(".txt") else s for s in ecfg["systems"]]
            edir = _rel(cfg, ecfg.get("directory", "refdata-validation"))
            reference.generate(systems.resolve(especs), edir, settings, ref,
                               n_jobs=dcfg.get("n_jobs", 1),
                               scheduler=dcfg.get("scheduler") or None)
            vdata = reference.load_dataset(edir)
            vres = fit.evaluate_exchange(fn, vdata)
            _print_evaluation(vres, "validation data")
            plots.parity_plot(vres, os.path.join(plot_dir, "parity-validation.png"))
            if ecfg.get("calibrate_domain", True) and fn.gp is not None:
                protect = [s.name for p in ecfg.get("protect", [])
                           for s in systems.resolve(_rel(cfg, p) if p.endswith(".txt") else p)]
                held_out = {n: v for n, v in vdata.items() if n not in data}
                dom = fit.calibrate_domain(fn, held_out, bad_kcal=ecfg.get("bad_kcal", 10.0),
                                           protect=protect, quiet_data=data)
                fn.header["domain"] = dom
                print(f"out-of-domain warning calibrated on {dom['n_systems']} held-out "
                      f"systems: point std > {dom['point_std']:.3g} on more than "
                      f"{100 * dom['weight_fraction']:.1f}% of the exchange energy; flags "
                      f"{dom['n_flagged']} ({dom['n_flagged_bad']} of the {dom['n_bad']} with "
                      f"|E_x error| > {dom['bad_kcal']:g} kcal/mol); Spearman(error scale, "
                      f"|error|) = {dom['spearman_error_scale']:.2f}")
                if not save_error:
                    from cider_xc.io import save_functional
                    path = save_functional(path, fn, overwrite=True)
                    print(f"wrote {path} (with the calibrated out-of-domain thresholds)")
        if save_error:
            raise SystemExit(save_error)
        return path


class LabelCommand:
    """Energies and forces (stress for periodic cells) of every structure of an
    extxyz trajectory, written as extxyz for ML-potential fitters; resumable."""

    @staticmethod
    def add_arguments(p):
        p.epilog = (
            "extxyz output keys (eV, Angstrom): energy, forces, stress (fully periodic cells;\n"
            "ASE sign: positive = the cell wants to shrink) as read by ase.io.read and\n"
            "NequIP/Allegro; the same as REF_energy, REF_forces, REF_stress and\n"
            "REF_virials = -stress*volume (MACE's default keys); input_index. With GPAW\n"
            "smearing, energy is the free energy (the one forces and stress derive from).\n"
            "cfg output (MLIP): AtomData id type cartes_x..z fx fy fz, Energy, PlusStress\n"
            "= -stress*volume (eV; xx yy zz yz xz xy), 'Feature types 0=Si,...' (type map).\n"
            "OUTPUT.state.json records settings, done and failed structures: rerun the\n"
            "same command to resume; exit code 1 if structures failed, 2 on bad input.")
        p.add_argument("input", help="extxyz trajectory (every frame is labelled)")
        p.add_argument("-o", "--output", required=True, help="extxyz file to write")
        p.add_argument("--code", choices=["auto", "pyscf", "gpaw"], default="auto",
                       help="auto: PySCF for molecules, GPAW for periodic cells")
        p.add_argument("--xc", default=None,
                       help="functional: a shipped CIDER name or model file (None: the "
                            "shipped default), or an xc string of the code, e.g. PBE")
        g = p.add_argument_group("PySCF (molecules)")
        g.add_argument("--basis", default="def2-svp", help="orbital basis (PySCF name)")
        g.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (0-9)")
        g.add_argument("--density-fit", action="store_true",
                       help="density fitting for the Coulomb (and exchange) terms")
        g.add_argument("--conv-tol", type=float, default=1e-9, help="Hartree")
        g.add_argument("--no-grid-response", dest="grid_response", action="store_false",
                       help="leave the grid response out of the forces (faster; the "
                            "forces are then not the exact derivative of the energy)")
        g.add_argument("--spin", type=int, default=None,
                       help="2S (None: from the initial magnetic moments, else 0 or 1 "
                            "from the electron count); GPAW takes the moments")
        g = p.add_argument_group("GPAW (periodic cells, plane waves)")
        g.add_argument("--ecut", type=float, default=500.0, help="plane-wave cutoff, eV")
        g.add_argument("--kpts", type=int, nargs=3, metavar=("A", "B", "C"), default=None,
                       help="Monkhorst-Pack k-point mesh (or give --kpt-density)")
        g.add_argument("--kpt-density", type=float, default=None,
                       help="k-points per 1/Angstrom (Gamma-centred)")
        g.add_argument("--smearing", type=float, default=None,
                       help="Fermi-Dirac width, eV (None: GPAW's default)")
        g = p.add_argument_group("both codes")
        g.add_argument("--charge", type=int, default=0, help="total charge")
        g.add_argument("--max-cycle", type=int, default=None,
                       help="SCF iterations (None: the code's default; may change on resume)")
        g.add_argument("--energy-only", action="store_true", help="no forces or stress")
        g.add_argument("--min-distance", type=float, default=0.3,
                       help="Angstrom; structures with closer atoms are recorded as failed")
        g = p.add_argument_group("output format")
        g.add_argument("--format", choices=["extxyz", "cfg"], default=None,
                       help="extxyz, or cfg (MLIP / Moment Tensor Potentials); None: "
                            "cfg if OUTPUT ends in .cfg, else extxyz")
        g.add_argument("--cfg-types", default=None,
                       help="cfg: the element of each MLIP type in order, e.g. Si,O "
                            "(None: the input's elements by atomic number); the map "
                            "is written as a 'Feature types 0=Si,1=O' line")
        g = p.add_argument_group("run")
        g.add_argument("--retry-failed", action="store_true",
                       help="compute again the structures that failed in earlier runs")
        g.add_argument("--overwrite", action="store_true",
                       help="discard an existing output and its state file")
        g.add_argument("--txt", default=None,
                       help="log file for the DFT codes' output (None: no log)")
        g.add_argument("--progress", choices=["bar", "log", "none"], default="bar",
                       help="tqdm bar, one log line per structure, or nothing")

    @staticmethod
    def run(args):
        from cider_xc import label as lb
        try:
            settings = lb.LabelSettings(
                code=args.code, xc=args.xc, basis=args.basis, grid_level=args.grid_level,
                density_fit=args.density_fit, conv_tol=args.conv_tol,
                grid_response=args.grid_response, charge=args.charge, spin=args.spin,
                max_cycle=args.max_cycle, energy_only=args.energy_only,
                min_distance=args.min_distance, ecut=args.ecut,
                kpts=tuple(args.kpts) if args.kpts else None, kpt_density=args.kpt_density,
                smearing=args.smearing)
            txt = open(args.txt, "a") if args.txt else None
            try:
                report = lb.label(args.input, args.output, settings,
                                  retry_failed=args.retry_failed, overwrite=args.overwrite,
                                  txt=txt, progress=args.progress, fmt=args.format,
                                  cfg_types=(args.cfg_types.split(",") if args.cfg_types
                                             else None))
            finally:
                if txt is not None:
                    txt.close()
        except lb.LabelError as err:
            print(f"cider-xc label: error: {err}", file=sys.stderr)
            raise SystemExit(2)
        except KeyboardInterrupt:
            print(f"cider-xc label: interrupted; finished structures are saved in "
                  f"{args.output}; rerun the same command to resume", file=sys.stderr)
            raise SystemExit(130)
        print(lb.summary(report))
        if report.failed:
            raise SystemExit(1)
        return report


COMMANDS = {"generate": GenerateCommand, "fit": FitCommand, "evaluate": EvaluateCommand,
            "train": TrainCommand, "info": InfoCommand, "scf": ScfCommand,
            "label": LabelCommand}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Every option shows its default; epilogs keep their line breaks."""


def build_parser():
    from cider_xc import __version__
    parser = argparse.ArgumentParser(prog="cider-xc", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"cider-xc {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.__doc__, description=cmd.__doc__,
                           formatter_class=HelpFormatter)
        cmd.add_arguments(p)
        p.formatter_class = HelpFormatter
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    return parser


def main(argv=None):
    """The ``cider-xc`` command.  An error prints one line naming the problem
    and exits with code 1 (``--debug``: the full traceback instead)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        raise SystemExit(f"cider-xc {args.command}: interrupted")
    except Exception as err:
        if args.debug:
            raise
        msg = " ".join(str(err).split()) or "(no message)"
        raise SystemExit(f"cider-xc {args.command}: error: {type(err).__name__}: {msg} "
                         "(--debug shows the traceback)") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
