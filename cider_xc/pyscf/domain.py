"""One warning when a converged PySCF calculation leans on out-of-domain points.

After a Kohn-Sham SCF whose ``xc`` is a CIDER functional finishes
(``_finalize``), the GP posterior standard deviation of f_ML is evaluated at
the grid points of the final density (:func:`.features.uncertainty_report`).
If the share of the exchange energy (weights |w_g e_x^LDA|) carried by points
whose standard deviation exceeds the model's calibrated point threshold is
above its calibrated fraction, one warning goes to the PySCF logger, naming
the fraction and the estimated error scale.  The model inputs come from the
last CIDER evaluation of the SCF (kept by ``CiderNumInt``: with PySCF's
default ``conv_check`` that is the final density's), so the check costs
only the GP standard deviation; without them (another path, a stale grid)
the features are recomputed on mf's density.  Both thresholds come from the
model file (``header["domain"]``), chosen on held-out systems
(benchmarks/uncertainty_calibration.py); a model without them uses the
defaults below.  ``mf.cider_domain_check = False`` switches the check off.
"""
from __future__ import annotations

from ..model import CiderFunctional


def thresholds(fn):
    """(point std threshold, weight fraction) of a functional
    (:meth:`CiderFunctional.domain_thresholds`)."""
    return fn.domain_thresholds()


def check(mf):
    """Run the check on a finished calculation; returns the report (or None
    when the functional has no GP data or the check is off) and logs one
    warning when the calculation is out of the model's domain."""
    from pyscf.lib import logger
    fn = mf.__dict__.get("xc")
    if not isinstance(fn, CiderFunctional) or fn.gp is None or fn.cider_x == 0.0:
        return None
    if not getattr(mf, "cider_domain_check", True) or mf.mo_coeff is None:
        return None
    thr, frac = thresholds(fn)
    rep = _report_from_kept_inputs(mf, fn, thr)
    if rep is None:
        from .features import uncertainty_report
        rep = uncertainty_report(mf, threshold=thr)
    mf.cider_domain_report = rep
    log = logger.new_logger(mf)
    if rep["out_of_domain"]:
        log.warn("CIDER functional %s is outside its training domain here: %.1f%% of "
                 "the exchange energy comes from points the model has not seen "
                 "(GP std > %.3g; warning above %.1f%%); estimated exchange error "
                 "scale %.2g Hartree (%.1f kcal/mol). Treat the result with care.",
                 fn.name, 100 * rep["weight_above_threshold"], thr, 100 * frac,
                 rep["exchange_error_scale"], 627.5095 * rep["exchange_error_scale"])
    else:
        log.info("CIDER domain check: %.2f%% of the exchange energy from points with "
                 "GP std > %.3g (warning above %.1f%%)",
                 100 * rep["weight_above_threshold"], thr, 100 * frac)
    return rep


def _report_from_kept_inputs(mf, fn, thr):
    """The domain summary from the model inputs CiderNumInt kept at its last
    evaluation, if they belong to this calculation (geometry, grid and
    functional); else None.  The kept inputs are released either way."""
    from .numint import domain_key
    cache = getattr(mf._numint, "_cache", None)
    kept = cache.pop("domain_inputs", None) if cache is not None else None
    if kept is None or mf.grids.weights is None or kept["key"] != domain_key(mf.mol, mf.grids, fn):
        return None
    return fn.domain_summary(fn.domain_sums_of(kept["blocks"], thr), threshold=thr)


def _finalize(self):
    super(_kohn_sham_base(), self)._finalize()
    check(self)


def _kohn_sham_base():
    from pyscf.dft import rks
    return rks.KohnShamDFT
