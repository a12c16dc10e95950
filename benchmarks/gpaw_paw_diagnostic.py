"""Where does the GPAW/PySCF difference of CIDER come from? (N and N2)

CIDER-minus-PBE atomization energy of N2 at the PBE densities, in GPAW (PW
500 eV, 9 Å box) and PySCF (def2-QZVP, grid 4, DF), for

* the full functional, and
* the same functional with the nonlocal features replaced by their local
  approximation G_i = n (pi/a_i)^{3/2} everywhere (a plain meta-GGA; in GPAW
  the grid part uses it too).

If the local variant agrees and the full one does not, the PAW machinery is
right and the difference lies in the nonlocal features of the pseudo-density.

    .venv/bin/python benchmarks/gpaw_paw_diagnostic.py
"""
import numpy as np

EV_TO_KCAL = 23.060547830619
HARTREE_TO_KCAL = 627.5094740631


def local_feature_variant():
    from cider_xc.gpaw import CiderXC
    from gpaw.xc.mgga import MGGA
    xc = CiderXC()
    # the grid part without the FFT features: the kernel then uses the local ones
    xc.calculate_impl = lambda gd, n_sg, v_sg, e_g: MGGA.calculate_impl(xc, gd, n_sg, v_sg, e_g)
    return xc


def gpaw_differences(symbols, positions):
    from ase import Atoms
    from gpaw import GPAW, PW, FermiDirac
    from cider_xc.gpaw import CiderXC
    atoms = Atoms(symbols, positions=positions, cell=[9.0] * 3, pbc=True)
    atoms.center()
    kw = dict(mode=PW(500), txt=None, legacy_gpaw=True)
    if len(symbols) == 1:
        kw.update(hund=True, spinpol=True, occupations=FermiDirac(0, fixmagmom=True))
    atoms.calc = GPAW(xc="PBE", **kw)
    atoms.get_potential_energy()
    return (atoms.calc.get_xc_difference(CiderXC()) * EV_TO_KCAL,
            atoms.calc.get_xc_difference(local_feature_variant()) * EV_TO_KCAL)


def pyscf_differences(symbols, positions, fn):
    from pyscf import dft, gto
    from cider_xc.descriptors import lda_exchange, pbe_enhancement
    spin = 3 if len(symbols) == 1 else 0
    mol = gto.M(atom=list(zip(symbols, map(tuple, positions))), basis="def2-qzvp",
                spin=spin, verbose=0)
    mf = dft.UKS(mol).density_fit()
    mf.grids.level = 4
    mf.xc = "PBE"
    mf.kernel()
    dm = mf.make_rdm1()
    mfc = dft.UKS(mol).density_fit()
    mfc.grids.level = 4
    mfc.xc = fn
    full = (mfc.energy_tot(dm) - mf.e_tot) * HARTREE_TO_KCAL
    ni, grids = mf._numint, mf.grids
    ao = ni.eval_ao(mol, grids.coords, deriv=1)
    ex_cider = ex_pbe = 0.0
    for s in range(2):
        r = 2 * ni.eval_rho(mol, ao, dm[s], xctype="MGGA", with_lapl=False)
        n, sigma, tau = r[0], (r[1:4] ** 2).sum(0), r[4]
        a, _ = fn.chain.exponents(n, sigma, tau)
        G = n[None] * (np.pi / a) ** 1.5
        ex_cider += 0.5 * np.dot(grids.weights, fn.exchange(n, sigma, tau, G).exc)
        e0, _ = lda_exchange(n)
        fpbe, _ = pbe_enhancement(fn.chain.transform(n, sigma, tau, G)[1].p)
        ex_pbe += 0.5 * np.dot(grids.weights, np.where(n > fn.settings.rho_cutoff, e0 * fpbe, 0))
    return full, fn.cider_x * (ex_cider - ex_pbe) * HARTREE_TO_KCAL


def main():
    from ase.build import molecule
    import cider_xc
    fn = cider_xc.load()
    n2 = molecule("N2")
    res = {}
    for name, sym, pos in [("N", ["N"], np.zeros((1, 3))),
                           ("N2", n2.get_chemical_symbols(), n2.positions)]:
        res[name] = (gpaw_differences(sym, pos), pyscf_differences(sym, pos, fn))
        print(name, "GPAW (full, local):", res[name][0], " PySCF (full, local):", res[name][1],
              flush=True)
    print("\nCIDER - PBE atomization energy of N2 at PBE densities (kcal/mol)")
    for i, label in enumerate(["full functional", "local features everywhere"]):
        g = 2 * res["N"][0][i] - res["N2"][0][i]
        p = 2 * res["N"][1][i] - res["N2"][1][i]
        print(f"{label:28s} GPAW {g:8.2f}  PySCF {p:8.2f}  difference {g - p:7.2f}")


if __name__ == "__main__":
    main()
