"""Water with the shipped default CIDER functional, next to PBE and PBE0.

    .venv/bin/python examples/water.py
"""
import time

from pyscf import dft, gto

import cider_xc

mol = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="def2-tzvp",
            verbose=0)
rows = []
for label, xc in (("CIDER", cider_xc.load()), ("PBE", "PBE"), ("PBE0", "PBE0")):
    mf = dft.RKS(mol).density_fit()
    mf.xc = xc
    t0 = time.perf_counter()
    e = mf.kernel()
    rows.append((label, e, mf.converged, time.perf_counter() - t0, str(xc)))

print(f"{'method':7s} {'E / Hartree':>16s} {'converged':>10s} {'time / s':>9s}  functional")
for label, e, conv, t, desc in rows:
    print(f"{label:7s} {e:16.8f} {str(conv):>10s} {t:9.2f}  {desc}")
e_c, e_pbe, e_pbe0 = (r[1] for r in rows)
print(f"\nCIDER - PBE  = {627.5095 * (e_c - e_pbe):9.3f} kcal/mol")
print(f"CIDER - PBE0 = {627.5095 * (e_c - e_pbe0):9.3f} kcal/mol")
