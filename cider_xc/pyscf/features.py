"""Per-point training data: descriptors of each spin channel on a PySCF grid.

For a density matrix (RKS: total; UKS: per spin) returns, for every spin
channel sigma, the model inputs x of the closed-shell density 2 n_sigma at the
grid points, the energy weights w_e = w_g e_x^LDA(2 n_sigma) / nspin (so that
E_x = sum_sigma sum_g w_e F_x(x)), and the PBE enhancement factor, so that
E_x^PBE = sum w_e F_x^PBE.
"""
from __future__ import annotations

import numpy as np

from ..descriptors import FeatureChain
from ..descriptors.semilocal import lda_exchange, pbe_enhancement
from .dfaux import DensityProjector


def spin_channel_features(mol, grids, dms, settings, projector=None, min_weight=0.0):
    """Descriptor data of every spin channel.

    dms : (nao, nao) for a closed shell or (2, nao, nao) for spin densities.
    Returns a list (one per spin channel) of dicts with x (n_features, N),
    we (N,), fpbe (N,), rho (N,) and coords (N, 3).  Points with
    |w_e| <= min_weight are dropped.
    """
    from pyscf import lib
    from pyscf.dft import numint
    mo_coeff = getattr(dms, "mo_coeff", None)
    mo_occ = getattr(dms, "mo_occ", None)
    dms = np.asarray(dms)
    if dms.ndim == 2:
        dms = dms[None]
        if mo_coeff is not None:
            mo_coeff, mo_occ = [mo_coeff], [mo_occ]
    nspin = dms.shape[0]
    if mo_coeff is not None and mo_occ is not None and len(mo_coeff) == nspin:
        # PySCF's make_rdm1() tags: the grid density from the occupied
        # orbitals (nao x nocc per point instead of nao^2), as in the SCF
        dms = [lib.tag_array(d, mo_coeff=np.asarray(c), mo_occ=np.asarray(o))
               for d, c, o in zip(dms, mo_coeff, mo_occ)]
    spin_fac = 2.0 if nspin == 2 else 1.0
    e_fac = 0.5 if nspin == 2 else 1.0
    proj = projector or DensityProjector(mol)
    chain = FeatureChain(settings)
    ni = numint.NumInt()
    nao = mol.nao
    out = []
    for dm in dms:
        c = spin_fac * proj.coefficients(dm)
        make_rho = ni._gen_rho_evaluator(mol, dm, 1, False, grids)[0]
        parts = {k: [] for k in ("x", "we", "fpbe", "rho", "coords")}
        for ao, mask, weight, coords in ni.block_loop(mol, grids, nao, 1):
            r = spin_fac * make_rho(0, ao, mask, "MGGA")
            n, grad, tau = r[0], r[1:4], r[4]
            sigma = np.einsum("xg,xg->g", grad, grad)
            a, _ = chain.exponents(n, sigma, tau)
            G, _ = proj.gaussians.convolve(coords, a, c)
            x, jac = chain.transform(n, sigma, tau, G)
            e0 = np.where(n > settings.rho_cutoff, lda_exchange(n)[0], 0.0)
            we = e_fac * weight * e0
            keep = np.abs(we) > min_weight
            parts["x"].append(x[:, keep])
            parts["we"].append(we[keep])
            parts["fpbe"].append(pbe_enhancement(jac.p)[0][keep])
            parts["rho"].append(n[keep])
            parts["coords"].append(coords[keep])
        out.append({k: np.concatenate(v, axis=-1 if k == "x" else 0)
                    for k, v in parts.items()})
    return out


def uncertainty_report(mf, dm=None, threshold=None):
    """How far a PySCF calculation with a CIDER functional strays from the
    training data, from the GP posterior kept in the model file.

    Returns :meth:`CiderFunctional.domain_summary`: the exchange-energy-weighted
    mean and the maximum of the per-point GP standard deviation of the gated
    f_ML, the share of the exchange energy above the point threshold (the
    model's calibrated one unless ``threshold`` is given), whether that share
    is above the calibrated fraction, and an error-bar estimate
    cider_x sum_g |w_g e_g| std_g for the CIDER exchange energy (Hartree; a
    scale, not a calibrated interval).
    """
    from ..model import CiderFunctional
    fn = mf.xc
    if not isinstance(fn, CiderFunctional):
        raise ValueError("uncertainty_report needs a calculation whose xc is a CIDER functional")
    if fn.gp is None:
        raise ValueError(f"functional {fn.name!r} carries no GP uncertainty data")
    if dm is None:
        dm = mf.make_rdm1()
    if mf.grids.coords is None:
        mf.grids.build()
    chans = spin_channel_features(mf.mol, mf.grids, dm, fn.settings,
                                  projector=mf._numint.projector(mf.mol))
    thr = threshold if threshold is not None else fn.domain_thresholds()[0]
    sums = fn.domain_sums_of(((c["x"], np.abs(c["we"])) for c in chans), thr)
    return fn.domain_summary(sums, threshold=thr)
