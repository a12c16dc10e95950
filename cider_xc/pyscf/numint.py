"""NumInt for CIDER functionals: energies and SCF potentials (RKS, UKS, ROKS).

Per grid block: the semilocal quantities of each spin channel's closed-shell
density 2 n_sigma, the exponents a_i(r), the nonlocal features G_i from the
density-fitting coefficients (analytic Gaussian convolution), the model, and
the potential in PySCF's meta-GGA layout.  The nonlocal adjoint collects
dE/dc over all blocks and becomes a Coulomb-like matrix at the end.

Nuclear gradients are in :mod:`cider_xc.pyscf.grad`.  Everything a CIDER
functional cannot do yet (response kernels for TDDFT, stability analysis,
CPHF and Hessians) raises ``NotImplementedError`` instead of returning a
wrong number.
"""
from __future__ import annotations

import numpy as np
from pyscf import lib
from pyscf.dft import numint
from pyscf.dft.numint import (NBINS, _dot_ao_ao_sparse, _scale_ao_sparse,
                              _tau_dot_sparse)
from pyscf.lib import logger

from ..model import CiderFunctional
from .dfaux import DensityProjector, geometry_key

#: densities below this (absolute, a.u.) count as numerical noise; below it
#: the input is rejected as a negative density
NEGATIVE_DENSITY_TOL = 1e-8

UNSUPPORTED = (
    "cider_xc: {what} is not implemented for CIDER functionals yet (energies, "
    "self-consistent potentials and analytic nuclear gradients of RKS/UKS/ROKS "
    "are); TDDFT, CPHF/stability analysis and Hessians need the second "
    "functional derivative, which is not available. Use a semilocal or hybrid "
    "functional string for these.")


class _LibxcShim:
    """PySCF's libxc module, answering for CIDER functionals too."""

    def __init__(self, base):
        self._base = base

    def __getattr__(self, key):
        if key == "_base":       # not yet set (no recursion through __getattr__)
            raise AttributeError(key)
        return getattr(self._base, key)

    # the wrapped libxc module cannot be copied or pickled: a copy of the
    # shim shares it (copy.deepcopy(mf) of a CIDER calculation), and a
    # pickled shim stores the module's name
    def __copy__(self):
        return _LibxcShim(self._base)

    def __deepcopy__(self, memo):
        return _LibxcShim(self._base)

    def __reduce__(self):
        return (_shim_from_module, (self._base.__name__,))

    def is_hybrid_xc(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            return bool(xc_code.semilocal_xc) and bool(
                self._base.is_hybrid_xc(xc_code.semilocal_xc))
        return self._base.is_hybrid_xc(xc_code)

    def is_nlc(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            return False
        return self._base.is_nlc(xc_code)

    def xc_type(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            return "MGGA"
        return self._base.xc_type(xc_code)

    def is_meta_gga(self, xc_code):
        return self.xc_type(xc_code) == "MGGA"

    def is_gga(self, xc_code):
        return self.xc_type(xc_code) == "GGA"

    def is_lda(self, xc_code):
        return self.xc_type(xc_code) == "LDA"

    def needs_laplacian(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            return False
        return self._base.needs_laplacian(xc_code)

    def xc_reference(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            refs = [f"CIDER exchange model '{xc_code.name}' (cider-xc), "
                    "after Bystrom and Kozinsky, JCTC 18, 2180 (2022)"]
            if xc_code.semilocal_xc:
                refs += list(self._base.xc_reference(xc_code.semilocal_xc))
            return refs
        return self._base.xc_reference(xc_code)

    def hybrid_coeff(self, xc_code, spin=0):
        if isinstance(xc_code, CiderFunctional):
            sl = xc_code.semilocal_xc
            return self._base.hybrid_coeff(sl, spin) if sl else 0.0
        return self._base.hybrid_coeff(xc_code, spin)

    def max_deriv_order(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            return 1
        return self._base.max_deriv_order(xc_code)

    def test_deriv_order(self, xc_code, deriv, raise_error=False):
        if isinstance(xc_code, CiderFunctional):
            if deriv > 1 and raise_error:
                raise NotImplementedError(UNSUPPORTED.format(
                    what="the second functional derivative (response: TDDFT, "
                         "stability analysis, CPHF, Newton solver)"))
            return deriv <= 1
        return self._base.test_deriv_order(xc_code, deriv, raise_error)

    def rsh_coeff(self, xc_code):
        if isinstance(xc_code, CiderFunctional):
            sl = xc_code.semilocal_xc
            return self._base.rsh_coeff(sl) if sl else (0.0, 0.0, 0.0)
        return self._base.rsh_coeff(xc_code)


def _shim_from_module(name):
    import importlib
    return _LibxcShim(importlib.import_module(name))


class CiderNumInt(numint.NumInt):
    """NumInt that evaluates a :class:`CiderFunctional` (and any string
    functional exactly as the stock NumInt it wraps)."""

    def __init__(self, functional, stock=None, cache=None):
        super().__init__()
        if not isinstance(functional, CiderFunctional):
            raise TypeError("CiderNumInt needs a CiderFunctional")
        self.functional = functional
        self._stock = stock if stock is not None else numint.NumInt()
        self.libxc = _LibxcShim(self._stock.libxc)
        self._cache = cache if cache is not None else {}

    # ---- helpers ---------------------------------------------------------
    def _is_cider(self, xc_code):
        return isinstance(xc_code, CiderFunctional)

    def projector(self, mol):
        """The (cached) density projector of this geometry and basis."""
        key = geometry_key(mol)
        proj = self._cache.get("projector")
        if proj is None or proj.key != key:
            t0 = (logger.process_clock(), logger.perf_counter())
            proj = DensityProjector(mol)
            self._cache["projector"] = proj
            log = logger.new_logger(mol)
            log.info("CIDER: density fitting in %d even-tempered auxiliary functions "
                     "(%d metric eigenvalues dropped)", proj.naux, proj.n_dropped)
            log.timer("CIDER auxiliary basis setup", *t0)
        return proj

    @property
    def timings(self):
        """Accumulated wall times (s) of the CIDER steps and the call count."""
        return dict(self._cache.get("timings", _new_timings()))

    def _xc_type(self, xc_code):
        if self._is_cider(xc_code):
            return "MGGA"
        return super()._xc_type(xc_code)

    # Exact exchange of the functional: none from the CIDER part; a hybrid
    # semilocal part (e.g. "0.25*HF + 0.75*GGA_X_PBE, GGA_C_PBE" or "wB97X")
    # brings its own, which PySCF's get_veff adds through these coefficients
    # (the grid part of such a string is only its DFT part).
    def rsh_and_hybrid_coeff(self, xc_code, spin=0):
        if self._is_cider(xc_code):
            sl = xc_code.semilocal_xc
            return super().rsh_and_hybrid_coeff(sl, spin) if sl else (0.0, 0.0, 0.0)
        return super().rsh_and_hybrid_coeff(xc_code, spin)

    def hybrid_coeff(self, xc_code, spin=0):
        if self._is_cider(xc_code):
            sl = xc_code.semilocal_xc
            return super().hybrid_coeff(sl, spin) if sl else 0.0
        return super().hybrid_coeff(xc_code, spin)

    def rsh_coeff(self, xc_code):
        if self._is_cider(xc_code):
            sl = xc_code.semilocal_xc
            return super().rsh_coeff(sl) if sl else (0.0, 0.0, 0.0)
        return super().rsh_coeff(xc_code)

    # ---- what is not supported ------------------------------------------
    def eval_xc_eff(self, xc_code, rho, deriv=1, omega=None, xctype=None, verbose=None,
                    spin=None):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(
                what="pointwise evaluation (eval_xc_eff), used by response "
                     "properties and Hessians (the features are nonlocal; nuclear "
                     "gradients go through cider_xc.pyscf.grad)"))
        return super().eval_xc_eff(xc_code, rho, deriv, omega, xctype, verbose, spin)

    def eval_xc(self, xc_code, rho, spin=0, relativity=0, deriv=1, omega=None,
                verbose=None):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="eval_xc"))
        return super().eval_xc(xc_code, rho, spin, relativity, deriv, omega, verbose)

    def nr_fxc(self, mol, grids, xc_code, dm0, dms, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().nr_fxc(mol, grids, xc_code, dm0, dms, *args, **kwargs)

    def nr_rks_fxc(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().nr_rks_fxc(mol, grids, xc_code, *args, **kwargs)

    def nr_rks_fxc_st(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().nr_rks_fxc_st(mol, grids, xc_code, *args, **kwargs)

    def nr_uks_fxc(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().nr_uks_fxc(mol, grids, xc_code, *args, **kwargs)

    def cache_xc_kernel(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().cache_xc_kernel(mol, grids, xc_code, *args, **kwargs)

    def cache_xc_kernel1(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError(UNSUPPORTED.format(what="the response kernel (fxc)"))
        return super().cache_xc_kernel1(mol, grids, xc_code, *args, **kwargs)

    def nr_nlc_vxc(self, mol, grids, xc_code, *args, **kwargs):
        if self._is_cider(xc_code):
            raise NotImplementedError("cider_xc: CIDER functionals have no VV10 part")
        return super().nr_nlc_vxc(mol, grids, xc_code, *args, **kwargs)

    # ---- energies and potentials ----------------------------------------
    def nr_rks(self, mol, grids, xc_code, dms, relativity=0, hermi=1,
               max_memory=2000, verbose=None):
        if not self._is_cider(xc_code):
            return super().nr_rks(mol, grids, xc_code, dms, relativity, hermi,
                                  max_memory, verbose)
        if getattr(dms, "ndim", None) == 2:
            # keep PySCF's mo_coeff/mo_occ tags: the density on the grid then
            # comes from the occupied orbitals (eval_rho2), as for any functional
            n, e, v = self._nr_cider(mol, grids, xc_code, [dms], hermi, max_memory,
                                     verbose)
            return n[0], e, v[0]
        dms = np.asarray(dms)
        nao = dms.shape[-1]
        dm_sets = dms.reshape(-1, nao, nao)
        out = [self._nr_cider(mol, grids, xc_code, [dm], hermi, max_memory, verbose)
               for dm in dm_sets]
        return (np.array([o[0][0] for o in out]), np.array([o[1] for o in out]),
                np.array([o[2][0] for o in out]).reshape(dms.shape))

    def nr_uks(self, mol, grids, xc_code, dms, relativity=0, hermi=1,
               max_memory=2000, verbose=None):
        if not self._is_cider(xc_code):
            return super().nr_uks(mol, grids, xc_code, dms, relativity, hermi,
                                  max_memory, verbose)
        dma, dmb = numint._format_uks_dm(dms)
        nao = dma.shape[-1]
        if dma.ndim == 2:
            # tagged with mo_coeff/mo_occ by _format_uks_dm when PySCF gave them
            return self._nr_cider(mol, grids, xc_code, [dma, dmb], hermi, max_memory,
                                  verbose)
        dma = np.asarray(dma)
        dmb = np.asarray(dmb)
        single = False
        dma = dma.reshape(-1, nao, nao)
        dmb = dmb.reshape(-1, nao, nao)
        out = [self._nr_cider(mol, grids, xc_code, [a, b], hermi, max_memory, verbose)
               for a, b in zip(dma, dmb)]
        if single:
            return out[0]
        nelec = np.array([o[0] for o in out]).T
        exc = np.array([o[1] for o in out])
        vmat = np.array([o[2] for o in out]).transpose(1, 0, 2, 3)
        return nelec, exc, vmat

    def _nr_cider(self, mol, grids, fn, dms, hermi, max_memory, verbose):
        """Energy and potential for one set of spin density matrices.

        dms : list of nspin (nao, nao) arrays; nspin = 1 (RKS, total density)
        or 2.  Arrays tagged with mo_coeff/mo_occ (as PySCF's SCF passes them)
        let the grid density come from the occupied orbitals.
        Returns nelec (nspin,), exc, vmat (nspin, nao, nao)."""
        if getattr(mol, "a", None) is not None and hasattr(mol, "lattice_vectors"):
            raise NotImplementedError(
                "cider_xc: periodic pyscf.pbc calculations are not supported; "
                "use cider_xc.gpaw for solids")
        log = logger.new_logger(mol, verbose)
        if not all(np.all(np.isfinite(dm)) for dm in dms):
            raise ValueError("cider_xc: the density matrix contains NaN or inf")
        nspin, nao = len(dms), dms[0].shape[-1]
        t_start = (logger.process_clock(), logger.perf_counter())
        proj = self.projector(mol)
        gset = proj.gaussians
        times = _new_timings()
        clock = _Clock(times)
        spin_fac = 2.0 if nspin == 2 else 1.0      # closed-shell density 2 n_sigma
        coefs = [spin_fac * proj.coefficients(dm) for dm in dms]
        clock.lap("fit")
        make_rho = [self._gen_rho_evaluator(mol, dm, hermi, False, grids)[0] for dm in dms]
        cx = fn.cider_x

        ao_loc = mol.ao_loc_nr()
        cutoff = grids.cutoff * 1e2
        nbins = NBINS * 2 - int(NBINS * np.log(cutoff) / np.log(grids.cutoff))
        pair_mask = mol.get_overlap_cond() < -np.log(self.cutoff)
        nelec = np.zeros(nspin)
        excsum = 0.0
        vmat = np.zeros((nspin, nao, nao))
        v1 = np.zeros((nspin, nao, nao))
        dE_dc = np.zeros((nspin, proj.naux))
        aow = None
        # model inputs and |w e_x^LDA| of this evaluation, kept for the
        # out-of-domain check after the SCF (cider_xc.pyscf.domain): the last
        # evaluation of an SCF is the final density's, so the check needs no
        # second feature computation
        domain = [] if fn.gp is not None and cx != 0.0 else None
        self._cache.pop("domain_inputs", None)
        clock.lap("other")
        for ao, mask, weight, coords in self.block_loop(mol, grids, nao, 1,
                                                        max_memory=max_memory):
            rhos = np.array([mr(0, ao, mask, "MGGA") for mr in make_rho])  # (nspin,5,N)
            _check_density(rhos)
            nelec += rhos[:, 0] @ weight
            clock.lap("ao")
            e, wv, feats = block_terms(fn, self._stock, rhos, weight, coords, gset, coefs,
                                       times, domain=domain)
            excsum += np.dot(weight, e)
            clock.reset()
            for s, f in enumerate(feats):
                if f is not None:      # dE/dc_s = spin_fac dE/dc' (c' = spin_fac c_s)
                    dE_dc[s] += spin_fac * gset.convolve_adjoint(*f)
            clock.lap("adjoint")
            for s in range(nspin):
                w = wv[s]
                w[0] *= 0.5   # for v + v.T
                w[4] *= 0.5   # 1/2 in tau
                aow = _scale_ao_sparse(ao[:4], w[:4], mask, ao_loc, out=aow)
                _dot_ao_ao_sparse(ao[0], aow, None, nbins, mask, pair_mask, ao_loc,
                                  hermi=0, out=vmat[s])
                _tau_dot_sparse(ao, ao, w[4], nbins, mask, pair_mask, ao_loc, out=v1[s])
            clock.lap("ao")     # (the next block's AO values are evaluated from here)
        vmat = lib.hermi_sum(vmat, axes=(0, 2, 1)) + v1
        if domain is not None:
            self._cache["domain_inputs"] = {"key": domain_key(mol, grids, fn),
                                            "blocks": domain}
        clock.lap("ao")
        if cx != 0.0:
            for s in range(nspin):
                vmat[s] += proj.potential(dE_dc[s])
        clock.lap("fit")
        for c in ("", "cpu_"):
            times[c + "descriptors"] = times[c + "features"] + times[c + "model"]
            times[c + "potential"] = times[c + "adjoint"] + times[c + "fit"]
        times["calls"] = 1
        times["total"] = logger.perf_counter() - t_start[1]
        times["cpu_total"] = logger.process_clock() - t_start[0]
        tim = self._cache.setdefault("timings", _new_timings())
        for k, v in times.items():
            tim[k] += v
        log.info("CIDER %s: E_xc = %.12g; descriptors %.3f s (features %.3f, model "
                 "%.3f), nonlocal potential %.3f s (adjoint %.3f, fit D->c and back "
                 "%.3f), semilocal part %.3f s, AO work %.3f s", fn.name, excsum,
                 times["descriptors"], times["features"], times["model"],
                 times["potential"], times["adjoint"], times["fit"], times["semilocal"],
                 times["ao"])
        log.timer("CIDER nr_%s" % ("rks" if nspin == 1 else "uks"), *t_start)
        return nelec, excsum, vmat


#: what CiderNumInt.timings accumulates (wall seconds; "calls" counts the
#: nr_rks/nr_uks calls): features = exponents + forward convolution, model =
#: F_x and its chain rule, adjoint = dE/dG -> dE/dc, fit = D -> c and
#: dE/dc -> V, semilocal = libxc part, ao = density on the grid and the AO
#: contraction of the potential (with the AO values); descriptors =
#: features + model and potential = adjoint + fit, as in earlier releases
TIMING_KEYS = ("calls", "total", "features", "model", "adjoint", "fit", "semilocal",
               "ao", "other", "descriptors", "potential")


def _new_timings():
    """Wall times (keys of TIMING_KEYS) and CPU times of this process
    ("cpu_" + key: all threads together; on one thread of an idle machine
    the same as the wall time, on a loaded one the more robust number)."""
    t = {k: (0 if k == "calls" else 0.0) for k in TIMING_KEYS}
    t.update({"cpu_" + k: 0.0 for k in TIMING_KEYS if k != "calls"})
    return t


class _Clock:
    """Adds the wall and CPU time since the last lap/reset to timings[key]
    and timings["cpu_" + key]."""

    def __init__(self, timings):
        self.timings = timings
        self.reset()

    def reset(self):
        self.w = logger.perf_counter()
        self.c = logger.process_clock()

    def lap(self, key):
        w, c = logger.perf_counter(), logger.process_clock()
        self.timings[key] += w - self.w
        self.timings["cpu_" + key] += c - self.c
        self.w, self.c = w, c


def domain_key(mol, grids, fn):
    """What the kept out-of-domain inputs belong to: geometry and basis, the
    grid (size and weight sum) and the functional object."""
    w = grids.weights
    return (geometry_key(mol), None if w is None else (w.size, float(w.sum())), id(fn))


def block_terms(fn, stock, rhos, weight, coords, gset, coefs, timings=None, domain=None):
    """Energy density, weighted potential and feature adjoints of one block:
    the per-point arithmetic of a CIDER functional, shared by the SCF
    (:meth:`CiderNumInt._nr_cider`) and the nuclear gradients.

    rhos (nspin, 5, N) of the spin densities (nspin = 1: total density);
    coefs[s] the fit coefficients of the closed-shell density 2 n_s (n for
    nspin = 1).  Returns e (N,) energy per volume, wv (nspin, 5, N) = w dE/d(n,
    grad n, tau) per spin, and per spin (points, a, uG) with uG = dE/dG
    (weights included) for the features built from coefs[s], at the points
    whose energy depends on them (fn.nonlocal_points; None when there is no
    CIDER part): what the adjoint and gradient kernels take.  timings: optional dict; its "features", "model" and
    "semilocal" entries get the wall times of these parts added.  domain:
    optional list; (x, |w e_x^LDA|) of every spin channel are appended to it
    (the out-of-domain check's inputs; x is the array the model already
    made, not a copy).
    """
    nspin, _, ngb = rhos.shape
    spin_fac = 2.0 if nspin == 2 else 1.0      # closed-shell density 2 n_sigma
    e_fac = 0.5 if nspin == 2 else 1.0         # E_x = 1/2 sum_sigma E_x[2 n_sigma]
    cx = fn.cider_x
    e = np.zeros(ngb)
    wv = np.zeros((nspin, 5, ngb))
    feats = [None] * nspin
    clock = _Clock(timings if timings is not None else _new_timings())
    for s in range(nspin if cx != 0.0 else 0):
        clock.reset()
        r2 = spin_fac * rhos[s]
        n, grad, tau = r2[0], r2[1:4], r2[4]
        sigma = np.einsum("xg,xg->g", grad, grad)
        a, a_derivs = fn.chain.exponents(n, sigma, tau)
        # the convolutions only where the energy depends on them (not in
        # the gated-off density tails nor in vacuum: fn.nonlocal_points)
        live = fn.nonlocal_points(n, sigma)
        if live is None:
            pts, a_live = coords, a
            G, dG_da = gset.convolve(pts, a_live, coefs[s])
        else:
            idx = np.nonzero(live)[0]
            pts, a_live = coords[idx], np.ascontiguousarray(a[:, idx])
            G = fn.neutral_features(ngb)
            dG_da = np.zeros_like(G)
            G[:, idx], dG_da[:, idx] = gset.convolve(pts, a_live, coefs[s])
        clock.lap("features")
        res = fn.exchange(n, sigma, tau, G, dG_da, a_derivs)
        if live is not None and np.any(res.vG[:, ~live]):
            raise RuntimeError("cider_xc: dE/dG is not zero at a point left out of the "
                               "convolutions (fn.nonlocal_points)")
        if domain is not None:     # (domain_sums drops the points of zero weight)
            domain.append((res.x, np.abs(e_fac * weight * res.e0)))
        clock.lap("model")
        e += cx * e_fac * res.exc
        wv[s, 0] += cx * weight * res.vrho
        wv[s, 1:4] += cx * 2.0 * weight * res.vsigma * grad
        wv[s, 4] += cx * weight * res.vtau
        uG = cx * e_fac * weight * res.vG
        feats[s] = (pts, a_live, uG if live is None else np.ascontiguousarray(uG[:, idx]))
    clock.reset()
    sl_code = fn.semilocal_xc
    sl_type = stock._xc_type(sl_code) if sl_code else "HF"
    if sl_type != "HF":          # "HF": exact exchange only, nothing on the grid
        rho_sl = rhos[0] if nspin == 1 else rhos
        if sl_type == "LDA":
            rho_sl = rho_sl[..., 0, :]
        elif sl_type == "GGA":
            rho_sl = rho_sl[..., :4, :]
        exc, vxc = stock.eval_xc_eff(sl_code, rho_sl, deriv=1, xctype=sl_type,
                                     spin=nspin - 1)[:2]
        e += rhos[:, 0].sum(axis=0) * exc
        vxc = np.asarray(vxc).reshape(nspin, -1, ngb)
        wv[:, :vxc.shape[1]] += weight * vxc
    clock.lap("semilocal")
    return e, wv, feats


def _check_density(rhos):
    if not np.all(np.isfinite(rhos)):
        raise ValueError("cider_xc: the density, its gradient or tau contains NaN "
                         "or inf on the grid")
    rmin = rhos[:, 0].min(initial=0.0)
    if rmin < -NEGATIVE_DENSITY_TOL:
        raise ValueError(f"cider_xc: negative density on the grid (min {rmin:.3g}); "
                         "the density matrix is not a physical density")
