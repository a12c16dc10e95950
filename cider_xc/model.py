"""The CIDER exchange functional: descriptor settings + enhancement factor.

E_x[n] = sum_sigma 1/2 int e_x^LDA(2 n_sigma) F_x(x[2 n_sigma]) dr,
F_x(x) = T(F_x^PBE(p) + g(x_p) f_ML(x)),

with f_ML a function of the bounded descriptors x (see
:mod:`cider_xc.descriptors.features`) that vanishes at x = 0, so that
f_ML = 0 and F_x = 1 exactly in the uniform electron gas, and T an optional
smooth bounded output map (:class:`FxBound`, identity around 1) that keeps F_x
inside the local Lieb-Oxford range 0 < F_x < 1.804 for every input, and g an
optional tail gate (:class:`TailGate`) that hands the far tails to PBE.

This module imports neither PySCF nor GPAW.
"""
from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from .descriptors import DescriptorSettings, FeatureChain
from .descriptors.semilocal import lda_exchange, pbe_enhancement


def _feature_array(x, n_features):
    """x as a contiguous (n_features, N) float array, or a clear error."""
    x = np.ascontiguousarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] != n_features:
        raise ValueError(f"model expects {n_features} features, got array of shape {x.shape}")
    return x


class PolynomialFx:
    """f_ML(x) = sum_t c_t prod_d x_d^k_td with every term of degree >= 1.

    Parameters
    ----------
    exponents : (n_terms, n_features) int array
    coefficients : (n_terms,) array
    """

    kind = "polynomial"

    def __init__(self, exponents, coefficients):
        e = np.asarray(exponents)
        c = np.asarray(coefficients, dtype=float)
        if e.ndim != 2 or c.ndim != 1 or e.shape[0] != c.shape[0]:
            raise ValueError(
                f"polynomial F_x needs exponents (n_terms, n_features) and "
                f"coefficients (n_terms,), got {e.shape} and {c.shape}")
        if not np.issubdtype(e.dtype, np.integer):
            if not np.all(np.equal(np.mod(e, 1), 0)):
                raise ValueError("polynomial exponents must be integers")
        e = e.astype(np.int64)
        if np.any(e < 0):
            raise ValueError("polynomial exponents must be >= 0")
        if np.any(e.sum(axis=1) == 0):
            raise ValueError("a constant term would break the uniform-gas limit F_x = 1")
        if not np.all(np.isfinite(c)):
            raise ValueError("polynomial coefficients must be finite")
        self.exponents = e
        self.coefficients = c

    @property
    def n_features(self):
        return self.exponents.shape[1]

    def basis(self, x):
        """Monomials of every term at x (n_features, N): (n_terms, N)."""
        x = np.asarray(x, dtype=float)
        out = np.ones((len(self.coefficients), x.shape[1]))
        for d in range(self.n_features):
            for k in range(1, int(self.exponents[:, d].max(initial=0)) + 1):
                sel = self.exponents[:, d] >= k
                out[sel] *= x[d]
        return out

    def __call__(self, x):
        """f (N,) and df/dx (n_features, N) at x (n_features, N)."""
        x = _feature_array(x, self.n_features)
        N = x.shape[1]
        f = np.zeros(N)
        df = np.zeros((self.n_features, N))
        kmax = int(self.exponents.max(initial=1))
        _poly_eval(self.exponents, self.coefficients, x, kmax, f, df)
        return f, df


_CHUNK = 256


@numba.njit(parallel=True, cache=True, fastmath=True)
def _poly_eval(E, c, x, kmax, f, df):
    nt, nf = E.shape
    N = x.shape[1]
    nchunk = (N + _CHUNK - 1) // _CHUNK
    # scratch outside the parallel loop, indexed by chunk (numba may hoist
    # allocations out of a prange body)
    pws = np.empty((nchunk, nf, kmax + 1))
    pres = np.empty((nchunk, nf + 1))
    sufs = np.empty((nchunk, nf + 1))
    for ch in numba.prange(nchunk):
        pw = pws[ch]
        pre = pres[ch]
        suf = sufs[ch]
        for g in range(ch * _CHUNK, min(N, (ch + 1) * _CHUNK)):
            for d in range(nf):
                pw[d, 0] = 1.0
                for k in range(1, kmax + 1):
                    pw[d, k] = pw[d, k - 1] * x[d, g]
            fg = 0.0
            for t in range(nt):
                pre[0] = 1.0
                for d in range(nf):
                    pre[d + 1] = pre[d] * pw[d, E[t, d]]
                suf[nf] = 1.0
                for d in range(nf - 1, -1, -1):
                    suf[d] = suf[d + 1] * pw[d, E[t, d]]
                fg += c[t] * pre[nf]
                for d in range(nf):
                    e = E[t, d]
                    if e > 0:
                        df[d, g] += c[t] * e * pw[d, e - 1] * pre[d] * suf[d + 1]
            f[g] = fg


class RBFFx:
    """f_ML(x) = sum_c w_c exp(-|x - x_c|^2 / (2 l^2)) - (same at x = 0).

    The mean of a Gaussian process with an RBF kernel, evaluated exactly (the
    subtraction of its value at the origin makes f_ML = 0, hence F_x = 1, in
    the uniform gas exactly).

    Parameters
    ----------
    control_points : (n_control, n_features) array
    weights : (n_control,) array (amplitude * beta of the GP)
    length_scale : float
    """

    kind = "rbf"

    def __init__(self, control_points, weights, length_scale):
        Xc = np.ascontiguousarray(control_points, dtype=float)
        w = np.ascontiguousarray(weights, dtype=float)
        if Xc.ndim != 2 or w.shape != (Xc.shape[0],):
            raise ValueError(f"RBF F_x needs control points (n, n_features) and weights (n,), "
                             f"got {Xc.shape} and {w.shape}")
        if not (np.all(np.isfinite(Xc)) and np.all(np.isfinite(w))):
            raise ValueError("RBF F_x arrays must be finite")
        length_scale = float(length_scale)
        if not length_scale > 0:
            raise ValueError("RBF length scale must be positive")
        self.control_points = Xc
        self.weights = w
        self.length_scale = length_scale
        self._xc2 = (Xc ** 2).sum(axis=1)
        # value at the origin, through the same kernel so f(0) - offset == 0 exactly
        self.offset = 0.0
        self.offset = float(self(np.zeros((Xc.shape[1], 1)))[0][0])

    @property
    def n_features(self):
        return self.control_points.shape[1]

    def __call__(self, x):
        """f (N,) and df/dx (n_features, N) at x (n_features, N)."""
        x = _feature_array(x, self.n_features)
        N = x.shape[1]
        f = np.empty(N)
        df = np.empty((self.n_features, N))
        args = (self.control_points, self.weights, 0.5 / self.length_scale ** 2)
        nt = min(numba.get_num_threads(), N // self.MIN_POINTS_PER_THREAD)
        if nt <= 1:
            _rbf_blocks(*args, x, f, df)
        else:
            # contiguous chunks on threads (the kernel releases the GIL)
            from concurrent.futures import ThreadPoolExecutor
            edges = np.linspace(0, N, nt + 1).astype(int)

            def run(i):
                a, b = edges[i], edges[i + 1]
                fc, dfc = np.empty(b - a), np.empty((self.n_features, b - a))
                _rbf_blocks(*args, np.ascontiguousarray(x[:, a:b]), fc, dfc)
                f[a:b] = fc
                df[:, a:b] = dfc

            with ThreadPoolExecutor(nt) as pool:
                list(pool.map(run, range(nt)))
        return f - self.offset, df

    MIN_POINTS_PER_THREAD = 4096

    def reference(self, x):
        """The same f, df by a direct loop (numba; tests only)."""
        x = _feature_array(x, self.n_features)
        f = np.empty(x.shape[1])
        df = np.empty(x.shape)
        _rbf_eval(self.control_points, self.weights, 0.5 / self.length_scale ** 2, x, f, df)
        return f - self.offset, df


# exp(x) for x <= 0, branch free (vectorising loops): the one of the
# convolution kernels, shared
from .descriptors.convolution import _exp_neg  # noqa: E402

_RBF_BLOCK = 128


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _rbf_blocks(Xc, w, gamma, x, f, df):
    """RBFFx's f, df (before the offset) in blocks of points: for every
    control point, loops over the block's points (contiguous, vectorised).
    Serial and GIL-free: RBFFx.__call__ runs contiguous chunks on threads.
    (Measured: a loop over a sub-range of blocks, or strided views, or a
    run-time exp table compile to scalar code, 2-4x slower.)"""
    nc, nf = Xc.shape
    N = x.shape[1]
    B = _RBF_BLOCK
    t = np.empty(B)
    fv = np.empty(B)
    acc = np.empty((nf, B))
    for b in range((N + B - 1) // B):
        g0 = b * B
        m = min(N, g0 + B) - g0
        fv[:] = 0.0
        acc[:] = 0.0
        for c in range(nc):
            for g in range(m):
                t[g] = 0.0
            for d in range(nf):
                xc = Xc[c, d]
                for g in range(m):
                    u = x[d, g0 + g] - xc
                    t[g] += u * u
            wc = w[c]
            for g in range(m):
                t[g] = wc * _exp_neg(-gamma * t[g])
                fv[g] += t[g]
            for d in range(nf):
                xc = Xc[c, d]
                for g in range(m):
                    acc[d, g] += t[g] * (x[d, g0 + g] - xc)
        for g in range(m):
            f[g0 + g] = fv[g]
        for d in range(nf):
            for g in range(m):
                df[d, g0 + g] = -2.0 * gamma * acc[d, g]


@numba.njit(parallel=True, cache=True, fastmath=True)
def _rbf_eval(Xc, w, gamma, x, f, df):
    nc, nf = Xc.shape
    N = x.shape[1]
    for g in numba.prange(N):
        fg = 0.0
        for d in range(nf):
            df[d, g] = 0.0
        for c in range(nc):
            d2 = 0.0
            for d in range(nf):
                t = x[d, g] - Xc[c, d]
                d2 += t * t
            v = w[c] * math.exp(-gamma * d2)
            fg += v
            for d in range(nf):
                df[d, g] -= 2.0 * gamma * (x[d, g] - Xc[c, d]) * v
        f[g] = fg


class FxBound:
    """Smooth bounded output map T of the enhancement factor.

    With the algebraic sigmoid q(u) = u / sqrt(1 + u^2):
    T(y) = y on [lower, upper] (so T(1) = 1: the uniform gas is untouched),
    upper + D q((y - upper)/D) above (D = fmax - upper, T -> fmax) and
    lower + lower q((y - lower)/lower) below (T -> 0 as lower/(2 u^2), so it
    stays positive in floating point too).  T is monotonic and C^2 (q is odd
    with q'(0) = 1), so the potential stays continuous and smooth; 0 < T(y) <
    fmax for every y, whatever f_ML does.

    Parameters
    ----------
    lower, upper, fmax : float, 0 < lower < 1 < upper < fmax
    """

    def __init__(self, lower=0.4, upper=1.7, fmax=1.804):
        lower, upper, fmax = float(lower), float(upper), float(fmax)
        if not (0.0 < lower < 1.0 < upper < fmax and math.isfinite(fmax)):
            raise ValueError(f"F_x bound needs 0 < lower < 1 < upper < fmax, got "
                             f"lower={lower}, upper={upper}, fmax={fmax}")
        self.lower, self.upper, self.fmax = lower, upper, fmax

    def todict(self):
        return {"lower": self.lower, "upper": self.upper, "fmax": self.fmax}

    @classmethod
    def fromdict(cls, d):
        if not isinstance(d, dict) or set(d) != {"lower", "upper", "fmax"}:
            raise ValueError(f"F_x bound must have lower, upper and fmax, got {d!r}")
        return cls(**d)

    def __call__(self, y):
        """T(y) and dT/dy (arrays shaped like y)."""
        y = np.asarray(y, dtype=float)
        lo, up = self.lower, self.upper
        dd = self.fmax - up
        u = np.maximum(y - up, 0.0) / dd
        v = np.minimum(y - lo, 0.0) / lo
        su = np.sqrt(1.0 + u * u)
        sv = np.sqrt(1.0 + v * v)
        t = np.clip(y, lo, up) + dd * u / su + lo * v / sv
        dt = 1.0 / (su * su * su * sv * sv * sv)   # 1 inside, (1+u^2)^-3/2 outside
        return t, dt

    def range_target(self, raw, fpbe):
        """Where the unbounded F_x^PBE + g f_ML (``raw``) leaves T's identity
        range [lower, max(upper, F_x^PBE)] (T saturates there; PBE itself is
        never counted as outside): the edge of the range it is pulled back
        to, NaN where it is inside.  ``np.isfinite`` of it is the saturated
        mask (training's range penalty and the reports of saturation)."""
        raw = np.asarray(raw, dtype=float)
        hi = np.maximum(self.upper, fpbe)
        return np.where(raw < self.lower, self.lower, np.where(raw > hi, hi, np.nan))

    def __repr__(self):
        return f"FxBound(lower={self.lower}, upper={self.upper}, fmax={self.fmax})"


def _smoothstep_off(x, start, end):
    """1 for x <= start, 0 for x >= end, a C^2 quintic in between; and d/dx."""
    t = np.clip((np.asarray(x, dtype=float) - start) / (end - start), 0.0, 1.0)
    g = 1.0 - t * t * t * (10.0 + t * (-15.0 + 6.0 * t))
    dg = -30.0 * t * t * (1.0 - t) ** 2 / (end - start)
    return g, dg


class TailGate:
    """Smooth switch that turns the learned part off where the density is
    too thin for its descriptors to mean anything.

    g = g_p(x_p) g_v(x_v), each 1 below its start, 0 above its end and a C^2
    quintic smoothstep in between.  F_x = T(F_x^PBE + g f_ML).

    * x_p = p/(1+p): where the reduced gradient is huge (exponential tails of
      molecules and atoms) F_x is PBE's, whose potential is well behaved,
      instead of a learned function of alpha and G, which are numerically
      ill-defined there.
    * x_v = x_g0, the first nonlocal feature (optional: ``valley_start``,
      ``valley_end``): it goes to 1 where the Gaussian-weighted density
      around a point dwarfs the point's own density.  That is a density
      valley: the vacuum between periodic images of a molecule or an atom in
      a plane-wave box, where p ~ 0 as well (the density has a minimum), so
      g_p does not act.  There tau ~ tau_W ~ 0 and the tau potential of any
      alpha-dependent F_x grows as n^(-1/3) dF/dalpha (H atom in a 7 A box:
      dE/dtau ~ -2, a negative kinetic coefficient, and no SCF convergence).
      No molecular training point has x_g0 above 0.69, so a gate starting
      above that leaves every fitted value unchanged and removes only
      extrapolation.

    Both inputs are scale-invariant, so the gate keeps every exact
    constraint; the model is trained with the gate in place.
    """

    def __init__(self, start=0.9, end=0.98, valley_start=None, valley_end=None):
        start, end = float(start), float(end)
        if not 0.0 < start < end <= 1.0:
            raise ValueError(f"tail gate needs 0 < start < end <= 1, got {start}, {end}")
        self.start, self.end = start, end
        if (valley_start is None) != (valley_end is None):
            raise ValueError("tail gate: give both valley_start and valley_end, or neither")
        if valley_start is not None:
            valley_start, valley_end = float(valley_start), float(valley_end)
            if not -1.0 < valley_start < valley_end <= 1.0:
                raise ValueError("tail gate needs -1 < valley_start < valley_end <= 1, got "
                                 f"{valley_start}, {valley_end}")
        self.valley_start, self.valley_end = valley_start, valley_end

    def todict(self):
        d = {"start": self.start, "end": self.end}
        if self.valley_start is not None:
            d.update(valley_start=self.valley_start, valley_end=self.valley_end)
        return d

    @classmethod
    def fromdict(cls, d):
        if (not isinstance(d, dict) or not {"start", "end"} <= set(d)
                or not set(d) <= {"start", "end", "valley_start", "valley_end"}):
            raise ValueError("tail gate must have start and end (and optionally "
                             f"valley_start, valley_end), got {d!r}")
        return cls(**d)

    def __call__(self, xp):
        """g_p(x_p) and dg_p/dx_p (the reduced-gradient part alone)."""
        return _smoothstep_off(xp, self.start, self.end)

    def factor(self, x):
        """g at model inputs x (n_features, N) with dg/dx_p and dg/dx_g0."""
        gp, dgp = _smoothstep_off(x[0], self.start, self.end)
        if self.valley_start is None or len(x) < 3:
            return gp, dgp, np.zeros_like(gp)
        gv, dgv = _smoothstep_off(x[2], self.valley_start, self.valley_end)
        return gp * gv, dgp * gv, gp * dgv

    def __repr__(self):
        extra = ("" if self.valley_start is None else
                 f", valley_start={self.valley_start}, valley_end={self.valley_end}")
        return f"TailGate(start={self.start}, end={self.end}{extra})"


def check_semilocal_xc(xc_string):
    """Refuse a semilocal part that PySCF's libxc parser cannot read, naming it.

    The string may carry exact exchange ("0.25*HF + 0.75*GGA_X_PBE, GGA_C_PBE",
    "wB97X"): the PySCF plugin then adds it as PySCF adds a hybrid's.  VV10
    (nonlocal correlation) belongs in ``mf.nlc`` and is refused here.  Without
    PySCF (a GPAW-only installation) the string is checked when GPAW uses it.
    """
    if not isinstance(xc_string, str):
        raise TypeError(f"semilocal_xc must be a libxc string, not {type(xc_string).__name__}")
    try:
        from pyscf.dft import libxc
    except ImportError:
        return
    try:
        libxc.parse_xc(xc_string)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"semilocal_xc {xc_string!r} is not a functional PySCF's libxc "
                         f"parser knows ({err})") from None
    if libxc.is_nlc(xc_string):
        raise ValueError(f"semilocal_xc {xc_string!r} has a VV10 (nonlocal correlation) "
                         "part, which a CIDER composition does not carry; set it through "
                         "PySCF's mf.nlc instead")


@dataclasses.dataclass
class XResult:
    """Exchange energy density (per volume) and its derivatives, per point.

    vrho, vsigma, vtau include the dependence through the exponents a_i when
    dG/da was supplied; vG is dE/dG_i at fixed exponents (n_nonlocal, N).
    x (n_features, N) are the model inputs and e0 (N,) the LDA exchange
    energy density (0 below the density cutoff) they were weighted with: what
    the out-of-domain check needs."""
    exc: np.ndarray
    vrho: np.ndarray
    vsigma: np.ndarray
    vtau: np.ndarray
    vG: np.ndarray
    x: np.ndarray = None
    e0: np.ndarray = None


class CiderFunctional:
    """A CIDER functional: what a model file holds.

    Attributes
    ----------
    settings : DescriptorSettings
    fx : PolynomialFx or RBFFx
    cider_x : float
        Fraction of CIDER exchange in the XC energy.
    semilocal_xc : str or None
        Remaining semilocal part as a libxc string understood by PySCF,
        e.g. ``"0.75*GGA_X_PBE, GGA_C_PBE"``; None for exchange only.
    name : str
    header : dict
        The model file header (provenance, training target, ...).
    bound : FxBound or None
        Bounded output map of F_x (None: F_x = F_x^PBE + f_ML unbounded, as
        in models written before the map existed).
    gate : TailGate or None
        Switch of f_ML in density tails (None: no gate).
    source : str
        What :func:`cider_xc.load` was given: a shipped name, or the absolute
        path of the model file (default: ``name``).  ``str(fn)`` names it, so
        that ``mf.xc = str(fn)`` in PySCF gives the same functional back.
    """

    def __init__(self, settings, fx, cider_x=1.0, semilocal_xc=None, name="cider",
                 header=None, gp=None, bound=None, gate=None, source=None):
        if not isinstance(settings, DescriptorSettings):
            raise TypeError("settings must be a DescriptorSettings")
        if fx.n_features != settings.n_features:
            raise ValueError(
                f"model has {fx.n_features} features but its descriptor settings "
                f"define {settings.n_features} ({', '.join(settings.feature_names)})")
        self.settings = settings
        self.fx = fx
        self.cider_x = float(cider_x)
        self.semilocal_xc = semilocal_xc or None
        self.name = name
        self.source = source or name
        self.header = dict(header or {})
        self.chain = FeatureChain(settings)
        if bound is not None and not isinstance(bound, FxBound):
            raise TypeError("bound must be an FxBound or None")
        self.bound = bound
        if gate is not None and not isinstance(gate, TailGate):
            raise TypeError("gate must be a TailGate or None")
        self.gate = gate
        self.gp = None
        if gp is not None:
            gp = dict(gp)
            Xc = np.asarray(gp["control_points"], dtype=float)
            cov = np.asarray(gp["cov"], dtype=float)
            if Xc.ndim != 2 or Xc.shape[1] != settings.n_features or cov.shape != (len(Xc),) * 2:
                raise ValueError("GP uncertainty arrays do not match the descriptor settings")
            gp["control_points"], gp["cov"] = Xc, cov
            gp["beta"] = np.asarray(gp["beta"], dtype=float)
            self.gp = gp

    def __repr__(self):
        return f"<CiderFunctional {self.describe()}>"

    def __str__(self):
        return self.xc_string()

    def xc_string(self):
        """The composition as a string that ``mf.xc = ...`` in PySCF (with
        cider_xc imported) turns back into this functional, e.g.
        ``"0.25*CIDER_X[cider-pbe0] + 0.75*GGA_X_PBE, GGA_C_PBE"`` (the model
        by its shipped name or absolute path).  Save it where a string is
        needed (chkfiles, logs)."""
        cx = f"{self.cider_x:g}"
        if float(cx) != self.cider_x:
            cx = repr(self.cider_x)
        parts = [f"{cx}*CIDER_X[{self.source}]"]
        if self.semilocal_xc:
            parts.append(self.semilocal_xc)
        return " + ".join(parts)

    # PySCF's dispersion lookup (scf.dispersion.parse_disp) lower-cases the
    # functional name; a CIDER functional has no dispersion parameters.
    def lower(self):
        return "cider"

    def upper(self):
        return "CIDER"

    def describe(self):
        parts = [f"{self.cider_x:g}*CIDER_X[{self.name}]"]
        if self.semilocal_xc:
            parts.append(self.semilocal_xc)
        return " + ".join(parts)

    def with_composition(self, *, exchange_only=False, cider_x=None, semilocal_xc=None,
                         validate=True):
        """A copy with another composition (same descriptors and F_x).

        An overriding ``semilocal_xc`` is checked with PySCF's libxc parser
        (:func:`check_semilocal_xc`) unless ``validate=False`` (the GPAW
        plugin, which parses it itself and must not import PySCF)."""
        if exchange_only:
            if cider_x is not None or semilocal_xc is not None:
                raise ValueError("exchange_only=True excludes cider_x/semilocal_xc")
            cx, sl = 1.0, None
        else:
            cx = self.cider_x if cider_x is None else cider_x
            sl = self.semilocal_xc if semilocal_xc is None else semilocal_xc
        if semilocal_xc is not None and validate:
            # an override is checked here; a model file's own string was
            # checked when it was made
            check_semilocal_xc(semilocal_xc)
        return CiderFunctional(self.settings, self.fx, cx, sl, self.name, self.header,
                               self.gp, self.bound, self.gate, self.source)

    def uncertainty(self, x):
        """GP posterior standard deviation of f_ML at x (n_features, N).

        A cheap estimate of how far a point lies from the training data
        (large where the descriptors were never seen).  Needs a trained model
        with stored GP state."""
        if self.gp is None:
            raise ValueError(f"functional {self.name!r} has no GP uncertainty data")
        X = np.asarray(x, dtype=float).T
        Xc = self.gp["control_points"]
        amp, ls = self.gp["amplitude"], self.gp["length_scale"]
        if "var_matrix" not in self.gp:
            # var(x) = amp - k^T (K_cc^-1 - cov) k
            self.gp["var_matrix"] = np.linalg.pinv(self._kcc()) - self.gp["cov"]
        A = self.gp["var_matrix"]
        xc2 = (Xc ** 2).sum(axis=1)
        out = np.empty(len(X))
        for i in range(0, len(X), 8192):
            Xi = X[i:i + 8192]
            d2 = (Xi ** 2).sum(axis=1)[:, None] + xc2[None, :] - 2.0 * Xi @ Xc.T
            K = amp * np.exp(-0.5 * np.maximum(d2, 0.0) / ls ** 2)
            out[i:i + 8192] = amp - np.einsum("nc,nc->n", K @ A, K)
        return np.sqrt(np.maximum(out, 0.0))

    def gated_uncertainty(self, x):
        """GP standard deviation of the learned part as it enters F_x: the
        posterior std of f_ML times the tail gate (where the gate hands the
        point to PBE, the model's uncertainty does not matter)."""
        x = np.asarray(x, dtype=float)
        if self.gate is None:
            return self.uncertainty(x)
        g = self.gate.factor(x)[0]
        live = g > 0.0             # (the GP std is not needed where g is 0)
        std = np.zeros(x.shape[1])
        if live.any():
            std[live] = self.uncertainty(x[:, live]) * g[live]
        return std

    #: out-of-domain warning defaults for a model file without calibrated thresholds
    DEFAULT_WEIGHT_FRACTION = 0.02

    def domain_thresholds(self):
        """(point std threshold, weight fraction) of the out-of-domain warning:
        the calibrated values of the model header ("domain"), else half the
        prior standard deviation and 2%."""
        dom = self.header.get("domain", {}) if self.header else {}
        thr = dom.get("point_std")
        if thr is None:
            thr = 0.5 * float(self.gp["amplitude"]) ** 0.5
        return float(thr), float(dom.get("weight_fraction", self.DEFAULT_WEIGHT_FRACTION))

    def domain_sums(self, x, weights, threshold):
        """Partial sums of the out-of-domain statistics over some points
        (model inputs x (n_features, N), weights |w_g e_g^LDA| (N,)):
        [sum w, sum w over std > threshold, sum w std, max std].  Sums of
        several batches (spin channels, MPI ranks) add, except the last
        entry, which takes the max; :meth:`domain_summary` finishes them."""
        w = np.asarray(weights, dtype=float)
        keep = w > 0
        if not keep.any():
            return np.zeros(4)
        std = self.gated_uncertainty(np.asarray(x, dtype=float)[:, keep])
        w = w[keep]
        return np.array([w.sum(), w[std > threshold].sum(), w @ std, std.max()])

    def domain_sums_of(self, batches, threshold):
        """:meth:`domain_sums` of several batches (x, weights) combined: the
        first three entries add, the max std takes the max."""
        sums = np.zeros(4)
        for x, w in batches:
            part = self.domain_sums(x, w, threshold)
            sums[:3] += part[:3]
            sums[3] = max(sums[3], part[3])
        return sums

    def domain_summary(self, sums, threshold=None, fraction=None):
        """The report of summed :meth:`domain_sums`: weighted mean and max
        std, the share of the exchange energy above the point threshold, an
        exchange error scale (Hartree, cider_x sum_g |w_g e_g| std_g) and
        whether it is out of domain (share above the weight fraction)."""
        thr0, frac0 = self.domain_thresholds()
        thr = thr0 if threshold is None else float(threshold)
        frac = frac0 if fraction is None else float(fraction)
        tot = max(float(sums[0]), 1e-300)
        share = float(sums[1]) / tot
        return {"mean_std": float(sums[2]) / tot, "max_std": float(sums[3]),
                "weight_above_threshold": share, "threshold": thr,
                "weight_fraction_threshold": frac,
                "prior_std": float(np.sqrt(self.gp["amplitude"])),
                "exchange_error_scale": float(self.cider_x * sums[2]),
                "out_of_domain": share > frac}

    def _kcc(self):
        Xc = self.gp["control_points"]
        d2 = ((Xc[:, None, :] - Xc[None, :, :]) ** 2).sum(-1)
        return self.gp["amplitude"] * np.exp(-0.5 * d2 / self.gp["length_scale"] ** 2) \
            + 1e-8 * self.gp["amplitude"] * np.eye(len(Xc))

    def enhancement(self, x, p=None, fpbe=None, return_raw=False):
        """F_x at model inputs x (n_features, N) with reduced gradient p (N,).

        Returns F (N,), dF/dx (n_features, N) and dF/dp at fixed x (N,), the
        PBE baseline's explicit p dependence.  The one place F_x is formed:
        the SCF plugins, training and evaluation all call it.  Training data
        store F_x^PBE itself: pass it as ``fpbe`` instead of p (dF/dp is then
        None).  ``return_raw`` adds F_x^PBE + g f_ML before the bound (where
        it leaves [lower, upper] the bound saturates)."""
        f, df = self.fx(x)
        if self.gate is not None:
            g, dgp, dgv = self.gate.factor(x)
            df = df * g
            df[0] += dgp * f
            if len(df) > 2:
                df[2] += dgv * f
            f = f * g
        if fpbe is None:
            fpbe, dfpbe = pbe_enhancement(p)
        else:
            fpbe, dfpbe = np.asarray(fpbe, dtype=float), None
        F = raw = fpbe + f
        if self.bound is not None:
            F, dT = self.bound(F)
            df = df * dT
            dfpbe = None if dfpbe is None else dfpbe * dT
        if return_raw:
            return F, df, dfpbe, raw
        return F, df, dfpbe

    def box_sample(self, n_points=200000, seed=0):
        """Model inputs drawn uniformly over the whole descriptor box (x_p in
        [0, 1), x_alpha and x_g in [-1, 1)) and the p of each x_p."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1.0, 1.0, (self.settings.n_features, n_points))
        x[0] = rng.uniform(0.0, 1.0 - 1e-9, n_points)
        return x, x[0] / (1.0 - x[0])

    def range_over_box(self, n_points=200000, seed=0):
        """Min and max of F_x and max |dF_x/dx| over a dense uniform sample of
        the descriptor box: what the functional can do anywhere, not only
        where it was trained."""
        x, p = self.box_sample(n_points, seed)
        F, dF, _ = self.enhancement(x, p)
        return {"n_points": n_points, "fx_min": float(F.min()), "fx_max": float(F.max()),
                "max_abs_dfx_dx": float(np.abs(dF).max())}

    def nonlocal_points(self, n, sigma):
        """Boolean mask (N,) of the points whose exchange depends on the
        nonlocal features: density above the cutoff and, with a tail gate,
        x_p below the gate's end.  Elsewhere the gate is exactly 0 (and so is
        its x_g0 derivative) or the point is vacuum, so F_x = T(F_PBE) and
        dE/dG = 0 whatever G is: callers may skip the convolutions there and
        pass :meth:`neutral_features` instead (exact, not an approximation).
        None when every point needs them."""
        from .descriptors.semilocal import reduced_gradient
        n = np.asarray(n, dtype=float)
        live = n > self.settings.rho_cutoff
        if self.gate is not None and self.cider_x != 0.0:
            p = reduced_gradient(n, sigma, self.settings.rho_cutoff)[0]
            live &= p / (1.0 + p) < self.gate.end
        return None if live.all() else live

    def neutral_features(self, npoints):
        """G (n_nonlocal, npoints) whose model inputs x_g are 0 (the uniform
        gas value): a finite stand-in at points :meth:`nonlocal_points`
        leaves out."""
        return np.repeat((1.0 / self.chain.g_scale)[:, None], npoints, axis=1)

    def exchange(self, n, sigma, tau, G, dG_da=None, a_derivs=None):
        """Closed-shell exchange energy density and derivatives.

        n, sigma, tau : (N,) density, |grad n|^2, kinetic energy density
        G : (n_nonlocal, N) nonlocal features at the exponents a_i(r)
        dG_da : (n_nonlocal, N), optional, derivative of G_i w.r.t. a_i
        a_derivs : (da_dn, da_dsigma, da_dtau) of the base exponent

        Returns an :class:`XResult`; at points below the density cutoff
        everything is 0.
        """
        n = np.asarray(n, dtype=float)
        x, jac = self.chain.transform(n, sigma, tau, G)
        F, df, dfpbe = self.enhancement(x, jac.p)
        e0, de0 = lda_exchange(n)
        mask = n > self.settings.rho_cutoff
        e0 = np.where(mask, e0, 0.0)
        de0 = np.where(mask, de0, 0.0)
        exc = e0 * F
        vrho = de0 * F + e0 * (dfpbe * jac.dp_dn + df[0] * jac.dxp_dn + df[1] * jac.dxa_dn)
        vsigma = e0 * (dfpbe * jac.dp_ds + df[0] * jac.dxp_ds + df[1] * jac.dxa_ds)
        vtau = e0 * df[1] * jac.dxa_dt
        vG = e0 * df[2:] * jac.dxg_dG
        if dG_da is not None:
            da_dn, da_ds, da_dt = a_derivs
            w = (vG * dG_da * self.chain.multipliers[:, None]).sum(axis=0)
            vrho = vrho + w * da_dn
            vsigma = vsigma + w * da_ds
            vtau = vtau + w * da_dt
        return XResult(exc, vrho, vsigma, vtau, vG, x, e0)
