"""The ``cider-xc`` command (ASE-style subcommands, lazy imports)."""
from __future__ import annotations

import argparse
import sys


class InfoCommand:
    """Print what a model file holds."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("model", nargs="?", default=None,
                       help="shipped name or path (default: the shipped default)")

    @staticmethod
    def run(args):
        import json
        import cider_xc
        fn = cider_xc.load(args.model)
        print(f"functional : {fn.describe()}")
        print(f"features   : {', '.join(fn.settings.feature_names)}")
        print(f"settings   : {json.dumps(fn.settings.todict())}")
        print(f"F_x terms  : {len(fn.fx.coefficients)}")
        print(f"provenance : {json.dumps(fn.header.get('provenance', {}))}")
        print(f"checksum   : {fn.header.get('checksum')}")


class ScfCommand:
    """SCF of a molecule with a CIDER functional, next to PBE and PBE0."""

    @staticmethod
    def add_arguments(p):
        p.add_argument("geometry", help="geometry file readable by ASE, or a PySCF atom string")
        p.add_argument("--model", default=None, help="functional (default: shipped default)")
        p.add_argument("--basis", default="def2-svp")
        p.add_argument("--charge", type=int, default=0)
        p.add_argument("--spin", type=int, default=None,
                       help="2S (default: 0 or 1 from the electron count)")
        p.add_argument("--grid-level", type=int, default=3)
        p.add_argument("--no-compare", action="store_true", help="skip PBE and PBE0")
        p.add_argument("--density-fit", action="store_true")
        p.add_argument("-v", "--verbose", type=int, default=3)

    @staticmethod
    def run(args):
        import os
        from pyscf import dft, gto
        import cider_xc
        atom = args.geometry
        if os.path.exists(atom):
            try:
                import ase.io
                at = ase.io.read(atom)
            except Exception as exc:
                raise SystemExit(f"cider-xc scf: cannot read geometry {atom}: {exc}")
            atom = [(s, tuple(p)) for s, p in zip(at.get_chemical_symbols(), at.positions)]
        mol = gto.M(atom=atom, basis=args.basis, charge=args.charge, verbose=0)
        spin = args.spin if args.spin is not None else mol.nelectron % 2
        mol = gto.M(atom=atom, basis=args.basis, charge=args.charge, spin=spin,
                    verbose=args.verbose)
        fn = cider_xc.load(args.model)
        rows = []
        for label, xc in [("CIDER", fn)] + ([] if args.no_compare else
                                             [("PBE", "PBE"), ("PBE0", "PBE0")]):
            mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
            if args.density_fit:
                mf = mf.density_fit()
            mf.grids.level = args.grid_level
            mf.xc = xc
            e = mf.kernel()
            rows.append((label, str(xc), e, mf.converged))
        print(f"{'method':8s} {'converged':9s} {'E / Hartree':>18s}  functional")
        for label, desc, e, conv in rows:
            print(f"{label:8s} {str(conv):9s} {e:18.10f}  {desc}")


COMMANDS = {"info": InfoCommand, "scf": ScfCommand}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cider-xc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.__doc__, description=cmd.__doc__)
        cmd.add_arguments(p)
    args = parser.parse_args(argv)
    COMMANDS[args.command].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
