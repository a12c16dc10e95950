"""Analytic nuclear gradients of CIDER functionals (RKS, UKS, ROKS; with or
without ``density_fit()``).

The CIDER exchange energy of one spin channel is

    E = sum_g w_g e(n_g, grad n_g, tau_g, G_g),
    G_{f,g} = sum_P c_P K_P(r_g - R_P; a_f(r_g)),   c = J^+ b,
    b_P = (P|mu nu) D_{mu nu},   J_PQ = (P|Q),

so a nuclear displacement changes it through

(a) the AO values on the grid: the usual meta-GGA Pulay terms, with the
    per-point potential in (n, grad n, tau) that already contains the chain
    rule through the exponents a_f(r);
(b) the fit coefficients at fixed D: with v = dE/dc and u = J^+ v, the terms
    u^T db/dR (three-centre ``int3c2e_ip1`` folded into the returned
    potential derivative, ``int3c2e_ip2`` on the auxiliary centres) and
    v^T d(J^+)/dR b (two-centre ``int2c2e_ip1``; when metric eigenvalues were
    dropped the derivative of the truncated pseudo-inverse is taken exactly
    by the Daleckii-Krein formula, see :func:`metric_response`);
(c) the explicit dependence of G on the auxiliary centres R_P
    (:meth:`SolidGaussianSet.center_gradient`);
(d) with ``grid_response=True``, the grid points and Becke weights moving
    with their atom; the features then also change through r_g
    (:meth:`SolidGaussianSet.point_gradient`).

The semilocal remainder (``fn.semilocal_xc``) enters the per-point potential
exactly as in :meth:`CiderNumInt._nr_cider`; a VV10 term set through
``mf.nlc`` uses PySCF's own gradient code.  Hessians and response properties
stay unsupported (see :mod:`.numint`).

:func:`install` wraps ``get_veff`` and ``extra_force`` of PySCF's KS gradient
classes: with a string ``xc`` the original methods run unchanged; with a
CIDER functional :func:`get_veff` below runs instead and its auxiliary-centre
forces are added by ``extra_force``.
"""
from __future__ import annotations

import functools

import numpy as np
from pyscf import df, gto, lib
from pyscf.dft import gen_grid
from pyscf.grad import rks as rks_grad
from pyscf.lib import logger

from ..model import CiderFunctional
from .numint import block_terms

#: points per chunk of an atomic grid in the grid-response path
GRID_CHUNK = 4096


def _is_cider(ks_grad):
    return isinstance(getattr(ks_grad.base, "xc", None), CiderFunctional)


def _check_supported(ks_grad):
    """Nothing to refuse at present: spin-free X2C (``mf.x2c()``) changes only
    the core Hamiltonian, whose gradient PySCF's X2C gradient classes supply;
    the XC part is the one below (tested against finite differences).  The
    two-component pyscf.x2c.RKS/UKS never get a CIDER functional (see
    :func:`cider_xc.pyscf.hook.check_supported`)."""
    return None


def _pulay(vmat, mol, ao, wv, mask, ao_loc):
    """Meta-GGA AO-derivative contraction (PySCF's sign: d/dr of the AOs)."""
    wv = wv.copy()
    wv[0] *= 0.5
    wv[4] *= 0.5
    rks_grad._gga_grad_sum_(vmat, mol, ao, wv, mask, ao_loc)
    rks_grad._tau_grad_dot_(vmat, mol, ao, wv[4], mask, ao_loc, True)


def _shell_atoms(auxmol):
    return np.asarray(auxmol._bas[:, gto.ATOM_OF], dtype=np.int64)


def _atom_sum(natm, atoms, rows):
    out = np.zeros((natm, 3))
    np.add.at(out, atoms, rows)
    return out


# ---------------------------------------------------------------------------
# the fit: c = J^+ b
# ---------------------------------------------------------------------------
def metric_response(w, U, n_dropped, v, b):
    """M with v^T d(J^+) b = sum_PQ M_PQ dJ_PQ for a symmetric dJ (M symmetric).

    J = U diag(w) U^T (ascending w); J^+ = sum over the kept eigenpairs
    (the last ``len(w) - n_dropped``) of u u^T / w.  By the Daleckii-Krein
    formula dJ^+ = U (Gamma o U^T dJ U) U^T with Gamma_ij the divided
    differences of f(w) = 1/w (kept), 0 (dropped): -1/(w_i w_j) between kept
    pairs, 1/(w_i (w_i - w_j)) between kept i and dropped j, 0 otherwise.
    Exact as long as no eigenvalue crosses the cutoff."""
    v = np.asarray(v, dtype=float)
    b = np.asarray(b, dtype=float)
    k = n_dropped
    Uk = U[:, k:]
    vt = Uk.T @ v
    bt = Uk.T @ b
    wk = w[k:]
    x = Uk @ (vt / wk)
    y = Uk @ (bt / wk)
    M = -np.outer(x, y)
    if k:
        Ud = U[:, :k]
        vd = Ud.T @ v
        bd = Ud.T @ b
        gam = 1.0 / (wk[:, None] * (wk[:, None] - w[None, :k]))     # (kept, dropped)
        M += Uk @ ((gam * np.outer(vt, bd)) @ Ud.T)
        M += Ud @ ((gam.T * np.outer(vd, bt)) @ Uk.T)
    return 0.5 * (M + M.T)


def _fit_forces(mol, proj, dms, v, max_memory):
    """Terms (b): the derivative of c' = J^+ b(D) at fixed D contracted with
    v = dE/dc' (one row per spin channel).

    Returns (vR, force): vR (nspin, 3, nao, nao) in PySCF's convention for
    get_veff (the minus sign applied; rows of atom A contract with D to the
    force on A), and the force (natm, 3) on the auxiliary centres."""
    auxmol = proj.auxmol
    nspin, nao = dms.shape[0], mol.nao
    naux = proj.naux
    natm = mol.natm
    u = np.array([proj._metric_solve(vs) for vs in v])          # J^+ v
    dmt = []
    for d in dms:
        t = lib.pack_tril(d + d.T)
        t[proj._diag] *= 0.5
        dmt.append(t)
    dmt = np.array(dmt)
    # two-centre: v^T dJ^+ b = sum M dJ
    M = np.zeros((naux, naux))
    w, U = proj.metric_eigenvalues, proj.metric_eigenvectors
    for s in range(nspin):
        b = proj.contract_j3c(dmt[s])
        M += metric_response(w, U, proj.n_dropped, v[s], b)
    force = np.zeros((natm, 3))
    aux_slices = auxmol.aoslice_by_atom()
    for ia in range(natm):
        sh0, sh1, p0, p1 = aux_slices[ia]
        if p1 == p0:
            continue
        ip1 = auxmol.intor("int2c2e_ip1", comp=3, shls_slice=(sh0, sh1, 0, auxmol.nbas))
        # dJ_PQ/dR_A = -(ip1_PQ [P in A] + ip1_QP [Q in A])
        force[ia] -= 2.0 * np.einsum("xpq,pq->x", ip1, M[p0:p1])
    # three-centre: u^T db/dR
    vR = np.zeros((nspin, 3, nao, nao))
    aux_loc = auxmol.ao_loc_nr()
    shl_atom = _shell_atoms(auxmol)
    # blocks of auxiliary shells holding at most nfmax functions
    nfmax = max(16, int(max_memory * 0.25e6 / 8 / (3 * nao * nao)))
    sh0 = 0
    while sh0 < auxmol.nbas:
        sh1 = sh0 + 1
        while sh1 < auxmol.nbas and aux_loc[sh1 + 1] - aux_loc[sh0] <= nfmax:
            sh1 += 1
        p0, p1 = aux_loc[sh0], aux_loc[sh1]
        sl = (0, mol.nbas, 0, mol.nbas, sh0, sh1)
        ip1 = df.incore.aux_e2(mol, auxmol, "int3c2e_ip1", aosym="s1", comp=3,
                               shls_slice=sl)                  # (3, nao, nao, nP)
        ip1 = ip1.reshape(3, nao, nao, p1 - p0)
        vR += np.dot(ip1, u[:, p0:p1].T).transpose(3, 0, 1, 2)
        ip1 = None
        ip2 = df.incore.aux_e2(mol, auxmol, "int3c2e_ip2", aosym="s2ij", comp=3,
                               shls_slice=sl)                  # (3, npair, nP)
        ip2 = ip2.reshape(3, -1, p1 - p0)
        dP = np.zeros((3, p1 - p0))
        for s in range(nspin):
            dP -= np.einsum("xmp,m->xp", ip2, dmt[s]) * u[s, p0:p1]
        ip2 = None
        # function -> atom
        fatom = np.repeat(shl_atom[sh0:sh1], np.diff(aux_loc[sh0:sh1 + 1]))
        np.add.at(force, fatom, dP.T)
        sh0 = sh1
    # vR[x, i, j] = sum_P (d_x i j|P) u_P; force on A = -2 sum_{i in A} vR.D,
    # i.e. -vR in get_veff's convention (which adds +2 rows_A(veff).D)
    return -vR, force


# ---------------------------------------------------------------------------
# the exchange-correlation part
# ---------------------------------------------------------------------------
def get_vxc(ni, mol, grids, fn, dms, grid_response=False, max_memory=2000,
            verbose=None):
    """XC part of the gradient of a CIDER functional.

    dms : (nao, nao) total density (restricted) or (2, nao, nao) spin densities.
    Returns (exc1_grid, vxc, aux_force, excsum):
      exc1_grid (natm, 3): grid response (zeros unless ``grid_response``);
      vxc: (3, nao, nao) or (2, 3, nao, nao), PySCF's get_veff convention;
      aux_force (natm, 3): terms (b) on the auxiliary centres and (c);
      excsum: the XC energy on these grids (for checks).
    """
    log = logger.new_logger(mol, verbose)
    t0 = (logger.process_clock(), logger.perf_counter())
    mo_coeff = getattr(dms, "mo_coeff", None)
    mo_occ = getattr(dms, "mo_occ", None)
    dms = np.asarray(dms)
    restricted = dms.ndim == 2
    dm_sets = dms[None] if restricted else dms
    if dm_sets.shape[0] not in (1, 2) or dm_sets.ndim != 3:
        raise ValueError("cider_xc: expected one (RKS) or two (UKS) density matrices")
    dm_sets = 0.5 * (dm_sets + dm_sets.transpose(0, 2, 1))
    nspin, nao = dm_sets.shape[0], dm_sets.shape[-1]
    natm = mol.natm
    proj = ni.projector(mol)
    gset = proj.gaussians
    spin_fac = 2.0 if nspin == 2 else 1.0
    coefs = [spin_fac * proj.coefficients(d) for d in dm_sets]
    rho_dms = dm_sets
    if mo_coeff is not None and mo_occ is not None:
        # the SCF's orbitals (RKS, UKS): the density on the grid from the
        # occupied orbitals, as PySCF's own gradients do
        mo_coeff = np.asarray(mo_coeff)
        mo_occ = np.asarray(mo_occ)
        if restricted and mo_coeff.ndim == 2 and mo_occ.ndim == 1:
            rho_dms = lib.tag_array(dm_sets, mo_coeff=mo_coeff[None], mo_occ=mo_occ[None])
        elif not restricted and mo_coeff.ndim == 3 and mo_occ.ndim == 2:
            rho_dms = lib.tag_array(dm_sets, mo_coeff=mo_coeff, mo_occ=mo_occ)
    make_rho = ni._gen_rho_evaluator(mol, rho_dms, 1, False, grids)[0]
    stock = ni._stock
    ao_loc = mol.ao_loc_nr()
    shl_atom = _shell_atoms(proj.auxmol)

    vmat = np.zeros((nspin, 3, nao, nao))
    dE_dc = np.zeros((nspin, proj.naux))
    shell_force = np.zeros((len(shl_atom), 3))
    exc1 = np.zeros((natm, 3))
    excsum = 0.0

    def features_adjoint(coords, feats, point_force=None):
        for s in range(nspin):
            if feats[s] is None:
                continue
            pts, a, uG = feats[s]      # (the points whose energy depends on G)
            dE_dc[s] += spin_fac * gset.convolve_adjoint(pts, a, uG)
            shell_force[:] += gset.center_gradient(pts, a, uG, coefs[s])
            if point_force is not None:
                point_force += gset.point_gradient(pts, a, uG, coefs[s]).sum(axis=0)

    if not grid_response:
        for ao, mask, weight, coords in ni.block_loop(mol, grids, nao, 2,
                                                      max_memory=max_memory):
            rhos = np.array([make_rho(s, ao[:4], mask, "MGGA") for s in range(nspin)])
            e, wv, feats = block_terms(fn, stock, rhos, weight, coords, gset, coefs)
            excsum += np.dot(weight, e)
            for s in range(nspin):
                _pulay(vmat[s], mol, ao, wv[s], mask, ao_loc)
            features_adjoint(coords, feats)
    else:
        for atm_id, (coords_a, weight_a, weight1_a) in enumerate(
                rks_grad.grids_response_cc(grids)):
            vtmp = np.zeros((nspin, 3, nao, nao))
            pf = np.zeros(3)
            for p0 in range(0, weight_a.size, GRID_CHUNK):
                p1 = min(weight_a.size, p0 + GRID_CHUNK)
                coords = np.ascontiguousarray(coords_a[p0:p1])
                weight = weight_a[p0:p1]
                mask = gen_grid.make_mask(mol, coords)
                ao = ni.eval_ao(mol, coords, deriv=2, non0tab=mask, cutoff=grids.cutoff)
                rhos = np.array([make_rho(s, ao[:4], mask, "MGGA") for s in range(nspin)])
                e, wv, feats = block_terms(fn, stock, rhos, weight, coords, gset, coefs)
                excsum += np.dot(weight, e)
                exc1 += np.einsum("r,nxr->nx", e, weight1_a[:, :, p0:p1])
                for s in range(nspin):
                    _pulay(vtmp[s], mol, ao, wv[s], mask, ao_loc)
                features_adjoint(coords, feats, pf)
                ao = None
            vmat += vtmp
            # the points of this atom's grid move with it: d/dR_atm of an AO
            # value phi(r_g) is +grad phi(r_g), and of G(r_g) at fixed
            # centres the point gradient (pf)
            exc1[atm_id] += 2.0 * np.einsum("sxij,sji->x", vtmp, dm_sets) + pf
    t1 = log.timer("CIDER gradient: grid terms", *t0)

    aux_force = _atom_sum(natm, shl_atom, shell_force)
    vxc = -vmat
    if fn.cider_x != 0.0:
        mem = max(500, max_memory - lib.current_memory()[0])
        vR, fit_force = _fit_forces(mol, proj, dm_sets, dE_dc, mem)
        aux_force += fit_force
        vxc += vR
        log.timer("CIDER gradient: fit terms", *t1)
    if restricted:
        vxc = vxc[0]
    return exc1, vxc, aux_force, excsum


def get_veff(ks_grad, mol=None, dm=None):
    """get_veff of the PySCF KS gradient classes for a CIDER functional."""
    if mol is None:
        mol = ks_grad.mol
    if dm is None:
        dm = ks_grad.base.make_rdm1()
    _check_supported(ks_grad)
    t0 = (logger.process_clock(), logger.perf_counter())
    mf = ks_grad.base
    ni = mf._numint
    grids, nlcgrids = rks_grad._initialize_grids(ks_grad)
    mem_now = lib.current_memory()[0]
    max_memory = max(2000, ks_grad.max_memory * 0.9 - mem_now)
    exc1, vxc, aux_force, excsum = get_vxc(
        ni, mol, grids, mf.xc, dm, grid_response=ks_grad.grid_response,
        max_memory=max_memory, verbose=ks_grad.verbose)
    if mf.do_nlc():
        # a VV10 term given by mf.nlc: PySCF's own gradient of it
        dm_tot = np.asarray(dm)
        if dm_tot.ndim == 3:
            dm_tot = dm_tot[0] + dm_tot[1]
        if ks_grad.grid_response:
            enlc, vnlc = rks_grad.get_nlc_vxc_full_response(
                ni, mol, nlcgrids, mf.nlc, dm_tot, max_memory=max_memory,
                verbose=ks_grad.verbose)
            exc1 = exc1 + enlc
        else:
            vnlc = rks_grad.get_nlc_vxc(ni, mol, nlcgrids, mf.nlc, dm_tot,
                                        max_memory=max_memory,
                                        verbose=ks_grad.verbose)[1]
        vxc = vxc + vnlc
    logger.debug1(ks_grad, "CIDER: E_xc on the gradient grids %.12g", excsum)
    if ks_grad.grid_response:
        logger.debug1(ks_grad, "sum(grids response) %s", exc1.sum(axis=0))
    t0 = logger.timer(ks_grad, "vxc", *t0)
    dm = np.asarray(dm)
    aux_response = getattr(ks_grad, "auxbasis_response", False)
    if not ni.libxc.is_hybrid_xc(mf.xc):
        vj = ks_grad.get_j(mol, dm)
        vk = None
    else:
        # exact exchange of a hybrid semilocal part, as PySCF's KS gradients
        # do it: hyb * K (full range) + (alpha - hyb) * K(omega) (long range)
        omega, alpha, hyb = ni.rsh_and_hybrid_coeff(mf.xc, spin=mol.spin)
        vj, vk = ks_grad.get_jk(mol, dm)
        vk[:] *= hyb                    # in place: keeps the .aux tag of DF
        if aux_response:
            vk.aux *= hyb
        if omega != 0:
            vklr = ks_grad.get_k(mol, dm, omega=omega)
            vk[:] += vklr * (alpha - hyb)
            if aux_response:
                vk.aux[:] += vklr.aux * (alpha - hyb)
    if dm.ndim == 3:
        vxc = vxc + vj[0] + vj[1]
        if vk is not None:
            vxc = vxc - vk
    else:
        vxc = vxc + vj
        if vk is not None:
            vxc = vxc - 0.5 * vk
    tags = {"exc1_grid": exc1, "cider_force": aux_force, "cider_exc": excsum}
    if aux_response:
        tags["aux"] = vj.aux.sum((0, 1))
        if vk is not None:
            tags["aux"] = tags["aux"] - (np.trace(vk.aux, axis1=0, axis2=1) if dm.ndim == 3
                                         else 0.5 * vk.aux.sum((0, 1)))
    return lib.tag_array(vxc, **tags)


# ---------------------------------------------------------------------------
# wiring into PySCF's gradient classes
# ---------------------------------------------------------------------------
def _wrap_get_veff(orig):
    @functools.wraps(orig)
    def wrapped(self, mol=None, dm=None):
        if _is_cider(self):
            return get_veff(self, mol, dm)
        return orig(self, mol, dm)
    wrapped._cider_orig = orig
    return wrapped


def _wrap_extra_force(orig):
    @functools.wraps(orig)
    def wrapped(self, atom_id, envs):
        e1 = orig(self, atom_id, envs)
        if _is_cider(self):
            e1 = e1 + envs["vhf"].cider_force[atom_id]
        return e1
    wrapped._cider_orig = orig
    return wrapped


def _targets():
    from pyscf.df.grad import rks as df_rks_grad
    from pyscf.df.grad import uks as df_uks_grad
    from pyscf.grad import roks as roks_grad
    from pyscf.grad import uks as uks_grad
    # classes whose own __dict__ defines get_veff / extra_force
    return ([rks_grad.Gradients, uks_grad.Gradients, roks_grad.Gradients,
             df_rks_grad.Gradients, df_uks_grad.Gradients],
            [rks_grad.Gradients, uks_grad.Gradients])


def install():
    """Wrap get_veff/extra_force of PySCF's KS gradient classes (idempotent)."""
    veff_classes, force_classes = _targets()
    for cls in veff_classes:
        f = cls.__dict__["get_veff"]
        if not hasattr(f, "_cider_orig"):
            cls.get_veff = _wrap_get_veff(f)
    for cls in force_classes:
        f = cls.__dict__["extra_force"]
        if not hasattr(f, "_cider_orig"):
            cls.extra_force = _wrap_extra_force(f)


def uninstall():
    veff_classes, force_classes = _targets()
    for cls in veff_classes:
        f = cls.__dict__.get("get_veff")
        if hasattr(f, "_cider_orig"):
            cls.get_veff = f._cider_orig
    for cls in force_classes:
        f = cls.__dict__.get("extra_force")
        if hasattr(f, "_cider_orig"):
            cls.extra_force = f._cider_orig
