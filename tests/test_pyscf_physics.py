"""Physics of the PySCF plugin: potentials, exact constraints, nonlocal kernel."""
import numpy as np
import pytest
from pyscf import dft, gto
from pyscf.dft import gen_grid

import cider_xc
from cider_xc.descriptors.reference import nonlocal_features_bruteforce
from cider_xc.pyscf.dfaux import DensityProjector
from conftest import lda_dm, pbe_dm


def _ks(mol, xc, unrestricted=False, level=3):
    mf = (dft.UKS if unrestricted else dft.RKS)(mol)
    mf.xc = xc
    mf.grids.level = level
    mf.grids.build()
    mf.verbose = 0
    return mf


def _exc(mf, dm):
    ni = mf._numint
    if dm.ndim == 3 and dm.shape[0] == 2 and isinstance(mf, dft.uks.UKS):
        return ni.nr_uks(mf.mol, mf.grids, mf.xc, dm)[1:]
    return ni.nr_rks(mf.mol, mf.grids, mf.xc, dm)[1:]


@pytest.mark.parametrize("unrestricted,exchange_only", [(False, True), (False, False),
                                                        (True, True), (True, False)])
def test_potential_is_derivative_of_energy(unrestricted, exchange_only):
    """<V, dD> equals dE/dt along D(t) = D0 + t (D1 - D0), 4-point stencil."""
    if unrestricted:
        mol = gto.M(atom="O 0 0 0; H 0 0 0.97", basis="6-31g", spin=1, verbose=0)
    else:
        mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="6-31g",
                    verbose=0)
    d0 = pbe_dm(mol, unrestricted)
    d1 = lda_dm(mol, unrestricted)
    # move d1 further away so the directional derivative is not tiny
    mf0 = _ks(mol, "HF", unrestricted, level=1)
    d1 = 0.5 * d1 + 0.5 * mf0.get_init_guess(key="minao")
    fn = cider_xc.load("test-nl", exchange_only=exchange_only)
    mf = _ks(mol, fn, unrestricted, level=2)
    dd = d1 - d0
    mid = 0.5 * (d0 + d1)
    e_mid, v_mid = _exc(mf, mid)
    analytic = np.sum(v_mid * dd)
    h = 1e-3
    e = {k: _exc(mf, mid + k * h * dd)[0] for k in (-2, -1, 1, 2)}
    fd = (8 * (e[1] - e[-1]) - (e[2] - e[-2])) / (12 * h)
    assert abs(analytic) > 1e-3
    assert abs(fd - analytic) <= 1e-6 * abs(analytic), (fd, analytic)


def _scaled_mol(mol, lam):
    basis = {}
    for sym, shells in mol._basis.items():
        basis[sym] = [[sh[0]] + [[p[0] * lam ** 2] + list(p[1:]) for p in sh[1:]]
                      for sh in shells]
    atom = [(mol.atom_symbol(i), mol.atom_coord(i) / lam) for i in range(mol.natm)]
    return gto.M(atom=atom, basis=basis, unit="Bohr", charge=mol.charge, spin=mol.spin,
                 verbose=0)


@pytest.mark.parametrize("lam", [1.3, 0.8])
def test_uniform_scaling(lam):
    """E_x[n_lambda] = lambda E_x[n] with the same density matrix."""
    mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="6-31g", verbose=0)
    dm = pbe_dm(mol)
    mol_l = _scaled_mol(mol, lam)
    fn = cider_xc.load("test-nl", exchange_only=True)
    e = {}
    for label, m in (("ref", mol), ("scaled", mol_l)):
        for xc in (fn, "GGA_X_PBE,"):
            mf = _ks(m, xc, level=5)
            e[label, str(xc)] = mf.get_veff(m, dm).exc
    err_cider = abs(e["scaled", str(fn)] / (lam * e["ref", str(fn)]) - 1)
    err_pbe = abs(e["scaled", "GGA_X_PBE,"] / (lam * e["ref", "GGA_X_PBE,"]) - 1)
    print(f"lambda={lam}: relative scaling error CIDER {err_cider:.2e}, PBE {err_pbe:.2e}")
    assert err_cider < 1e-6
    assert err_pbe < 1e-8


def test_scaling_of_features_is_exact():
    """The fitted density scales exactly: the same features at mapped points."""
    mol = gto.M(atom="O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59", basis="6-31g", verbose=0)
    dm = pbe_dm(mol)
    lam = 1.3
    mol_l = _scaled_mol(mol, lam)
    fn = cider_xc.load("test-nl")
    pts = np.random.default_rng(0).normal(size=(200, 3))
    out = []
    for m, p in ((mol, pts), (mol_l, pts / lam)):
        proj = DensityProjector(m)
        c = proj.coefficients(dm)
        ao = dft.numint.eval_ao(m, p, deriv=1)
        rho = dft.numint.eval_rho(m, ao, dm, xctype="MGGA", with_lapl=False)
        a, _ = fn.chain.exponents(rho[0], (rho[1:4] ** 2).sum(0), rho[4])
        out.append(proj.gaussians.convolve(p, a, c)[0])
    assert np.allclose(out[0], out[1], rtol=1e-10, atol=0)


def test_spin_scaling():
    """UKS E_x[n_up, n_dn] = (E_x[2 n_up] + E_x[2 n_dn]) / 2."""
    mol = gto.M(atom="O 0 0 0; H 0 0 0.97", basis="6-31g", spin=1, verbose=0)
    dma, dmb = pbe_dm(mol, unrestricted=True)
    fn = cider_xc.load("test-nl", exchange_only=True)
    mfu = _ks(mol, fn, unrestricted=True)
    mfr = _ks(mol, fn)
    mfr.grids = mfu.grids
    e_u = mfu.get_veff(mol, np.array([dma, dmb])).exc
    e_r = 0.5 * (mfr.get_veff(mol, 2 * dma).exc + mfr.get_veff(mol, 2 * dmb).exc)
    assert abs(e_u - e_r) <= 1e-10 * abs(e_r)
    # and the channels are not mixed: swapping them changes nothing
    e_s = mfu.get_veff(mol, np.array([dmb, dma])).exc
    assert abs(e_s - e_u) <= 1e-12 * abs(e_u)


def test_closed_shell_uks_equals_rks(water_sto3g):
    fn = cider_xc.load("test-nl")
    dm = pbe_dm(water_sto3g)
    mfr = _ks(water_sto3g, fn)
    mfu = _ks(water_sto3g, fn, unrestricted=True)
    er, vr = _exc(mfr, dm)
    eu, vu = _exc(mfu, np.array([dm / 2, dm / 2]))
    assert abs(er - eu) < 1e-11 * abs(er)
    assert np.allclose(vu[0], vr, atol=1e-11) and np.allclose(vu[1], vr, atol=1e-11)


def test_aux_functions_match_pyscf(water_sto3g):
    proj = DensityProjector(water_sto3g)
    pts = np.random.default_rng(1).normal(size=(300, 3))
    c = np.random.default_rng(2).normal(size=proj.naux)
    ref = proj.auxmol.eval_gto("GTOval_sph", pts) @ c
    assert np.allclose(proj.gaussians.evaluate(pts, c), ref, rtol=0, atol=1e-12 * abs(ref).max())


def test_fast_nonlocal_features_match_bruteforce(water_sto3g, test_nl):
    """Analytic convolution vs a double sum over a fine grid (level 9) of the
    same (fitted) density: 1e-6 relative."""
    mol = water_sto3g
    dm = pbe_dm(mol)
    proj = DensityProjector(mol)
    c = proj.coefficients(dm)
    g = gen_grid.Grids(mol)
    g.level = 2
    g.build()
    sel = np.random.default_rng(0).choice(len(g.weights), 150, replace=False)
    tg = g.coords[sel]
    ao = dft.numint.eval_ao(mol, tg, deriv=1)
    rho = dft.numint.eval_rho(mol, ao, dm, xctype="MGGA", with_lapl=False)
    a, _ = test_nl.chain.exponents(rho[0], (rho[1:4] ** 2).sum(0), rho[4])
    G, dG = proj.gaussians.convolve(tg, a, c)
    fine = gen_grid.Grids(mol)
    fine.level = 9
    fine.prune = None
    fine.build()
    nfit = proj.gaussians.evaluate(fine.coords, c)
    Gb = nonlocal_features_bruteforce(tg, a, fine.coords, fine.weights, nfit)
    err = np.abs(G - Gb).max() / np.abs(G).max()
    assert err < 1e-6, err
    # and the fitted density is close to the exact one (recorded in the README)
    nex = dft.numint.eval_rho(mol, dft.numint.eval_ao(mol, fine.coords), dm)
    Ge = nonlocal_features_bruteforce(tg, a, fine.coords, fine.weights, nex)
    assert np.abs(Ge - Gb).max() / np.abs(Ge).max() < 5e-3


def test_convolution_derivative_and_adjoint(water_sto3g, test_nl):
    proj = DensityProjector(water_sto3g)
    rng = np.random.default_rng(5)
    pts = rng.normal(size=(500, 3))
    a = 10 ** rng.uniform(-1.5, 2, size=(3, 500))
    c = rng.normal(size=proj.naux)
    G, dG = proj.gaussians.convolve(pts, a, c)
    h = 1e-5
    Gp = proj.gaussians.convolve(pts, a * (1 + h), c)[0]
    Gm = proj.gaussians.convolve(pts, a * (1 - h), c)[0]
    assert np.allclose((Gp - Gm) / (2 * h * a), dG, rtol=1e-6, atol=1e-9 * abs(dG).max())
    u = rng.normal(size=a.shape)
    c2 = rng.normal(size=proj.naux)
    lhs = np.dot(proj.gaussians.convolve_adjoint(pts, a, u), c2)
    rhs = np.sum(u * proj.gaussians.convolve(pts, a, c2)[0])
    assert abs(lhs - rhs) < 1e-11 * abs(rhs)


def test_density_fit_projection_is_linear_and_adjoint(water_sto3g):
    proj = DensityProjector(water_sto3g)
    rng = np.random.default_rng(7)
    nao = water_sto3g.nao
    d = rng.normal(size=(nao, nao))
    d = d + d.T
    w = rng.normal(size=proj.naux)
    lhs = np.dot(proj.coefficients(d), w)
    rhs = np.sum(proj.potential(w) * d)
    assert abs(lhs - rhs) < 1e-10 * abs(rhs)
