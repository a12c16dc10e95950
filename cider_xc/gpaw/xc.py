"""CIDER exchange in GPAW: a meta-GGA XC object with nonlocal features.

``CiderXC(functional)`` is a :class:`gpaw.xc.mgga.MGGA` whose kernel
evaluates the whole composition of a CIDER functional (the CIDER exchange
fraction plus the semilocal remainder through GPAW's libxc kernels).
GPAW's MGGA machinery supplies the gradients, the kinetic-energy density,
the orbital-dependent (tau) Hamiltonian and the PAW on-site corrections.

The nonlocal features live on GPAW's fine grid (the pseudo-density plus the
pseudo-core density, the same array GPAW gives every XC functional) and are
computed by FFT (:mod:`cider_xc.descriptors.periodic`); the adjoint
potential is added to v_sg.

PAW on-site corrections (radial grids inside the augmentation spheres), by
default (``paw_features='nonlocal'``, :mod:`cider_xc.gpaw.paw`): every term
sees the features of one density, the pseudo-density plus compensation
functions carrying the multipoles of n^a - n~^a, interpolated from the FFT
grid to the radial points, plus the exact one-centre features of the rest of
n^a - n~^a in the all-electron term.  ``paw_features='local'`` is the older,
cheaper and much less accurate treatment: both on-site terms use the local
approximation G_i(r) ~ n(r) (pi / a_i(r))^{3/2} (exact in the uniform gas
only).  See the README for the size of both approximations.
"""
from __future__ import annotations

import contextlib
import re
import time
import warnings

import numpy as np
from gpaw.xc.libxc import LibXC
from gpaw.xc.mgga import MGGA

from ..descriptors.periodic import PeriodicGaussianConvolver
from ..descriptors.semilocal import CTAU
from .radial import channel_inputs, paw_correction
from .sources import LOCAL_FEATURES, GridFeatures

# The XC entry of a .gpw file is {"name": GPW_NAME, ...}.  GPAW has no
# registry for XC objects from other packages: its own reader
# (GPAW('file.gpw')) hands the name to libxc and fails with
# "Unknown functional: <name>", so the name itself says how to read the file.
GPW_NAME = "CIDER (read this .gpw file with cider_xc.gpaw.restart)"
GPW_NAMES = (GPW_NAME, "CIDER")          # "CIDER": files of earlier releases

_TERM = re.compile(r"^\s*(?:([0-9.eE+-]+)\s*\*\s*)?([A-Za-z0-9_]+)\s*$")


def parse_semilocal(xc_string):
    """Split a libxc string like "0.75*GGA_X_PBE, GGA_C_PBE" into
    [(0.75, 'GGA_X_PBE'), (1.0, 'GGA_C_PBE')]."""
    if not xc_string:
        return []
    terms = []
    for term in re.split(r"[,+]", xc_string):
        if not term.strip():
            continue
        m = _TERM.match(term)
        if m is None:
            raise ValueError(f"cannot parse the semilocal part {xc_string!r} "
                             f"(term {term.strip()!r}); expected 'coef*LIBXC_NAME' terms")
        coef = float(m.group(1)) if m.group(1) else 1.0
        name = m.group(2).upper()
        if name in ("HF", "EXX") or name.startswith("HYB_"):
            raise ValueError(f"the semilocal part {xc_string!r} contains exact exchange, "
                             "which CiderXC in GPAW does not provide")
        terms.append((coef, name))
    return terms


def initial_tau(n, sigma):
    """Stand-in kinetic-energy density tau_W + tau_0 (alpha = 1, the
    uniform-gas value) of a closed-shell density, for the Hamiltonian GPAW
    builds before any orbitals exist."""
    ns = np.maximum(n, 1e-30)
    return np.where(n > 0.0, sigma / (8.0 * ns) + CTAU * ns ** (5.0 / 3.0), 0.0)


class CiderKernel:
    """GPAW XC kernel (type MGGA) of a :class:`~cider_xc.CiderFunctional`.

    :meth:`evaluate` takes the feature source explicitly (LocalFeatures,
    RadialFeatures or GridFeatures); :meth:`calculate` follows GPAW's kernel
    contract (e_g is written, dedn_sg is added to, dedsigma_xg and dedtau_sg
    are written) with the source of the enclosing :meth:`using` block, the
    local approximation outside one.  GPAW's MGGA.calculate_impl calls
    calculate(), so a grid call runs inside ``with kernel.using(source)``.
    """

    type = "MGGA"

    def __init__(self, functional, onsite="local"):
        if onsite not in ("local", "pbe"):
            raise ValueError(f"onsite must be 'local' or 'pbe', not {onsite!r}")
        self.functional = functional
        self.onsite = onsite
        self.name = f"CIDER[{functional.name}]"
        self.parts = [(c, LibXC(name)) for c, name in parse_semilocal(functional.semilocal_xc)]
        # onsite='pbe': PBE exchange in place of the CIDER fraction on the radial grids
        self._onsite_pbe = ([(functional.cider_x, LibXC("GGA_X_PBE"))]
                            if onsite == "pbe" and functional.cider_x != 0.0 else [])
        self._source = None
        self.grid_time = 0.0    # seconds spent in calculate() on the 3-D grid
        # inputs of the last grid call per channel (for the domain check)
        self.last_grid_inputs = {}

    @contextlib.contextmanager
    def using(self, source):
        """Feature source of the GPAW-contract calls inside the block."""
        previous = self._source
        self._source = source
        try:
            yield source
        finally:
            self._source = previous

    @property
    def grid(self):
        """The GridFeatures of the grid call under way, or None."""
        src = self._source
        return src if src is not None and src.grid else None

    @property
    def tau_guess(self):
        """True inside a grid call made before GPAW has any orbitals."""
        grid = self.grid
        return bool(grid is not None and grid.tau_guess)

    def calculate(self, e_g, n_sg, dedn_sg, sigma_xg=None, dedsigma_xg=None,
                  tau_sg=None, dedtau_sg=None):
        source = self._source if self._source is not None else LOCAL_FEATURES
        return self.evaluate(source, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg,
                             tau_sg, dedtau_sg)

    def evaluate(self, source, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg, tau_sg, dedtau_sg):
        """The kernel with the features of ``source`` (same contract as calculate)."""
        if not source.grid:
            return self._calculate(source, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg,
                                   tau_sg, dedtau_sg)
        t0 = time.perf_counter()
        try:
            return self._calculate(source, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg,
                                   tau_sg, dedtau_sg)
        finally:
            self.grid_time += time.perf_counter() - t0

    def _calculate(self, source, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg, tau_sg, dedtau_sg):
        fn = self.functional
        nspins = len(n_sg)
        if sigma_xg is None or tau_sg is None:
            raise ValueError("CiderKernel needs sigma and tau (meta-GGA)")
        if not np.all(np.isfinite(n_sg)):
            raise ValueError("CiderXC: the density contains NaN or inf values")
        shape = e_g.shape
        e_g[:] = 0.0
        dedsigma_xg[:] = 0.0
        dedtau_sg[:] = 0.0
        cx = fn.cider_x
        parts = self.parts
        if not source.grid and self.onsite == "pbe":
            parts = parts + self._onsite_pbe    # PBE exchange instead of CIDER on site
            cx = 0.0
        for s in range(nspins if cx != 0.0 else 0):
            n, sig, tau = channel_inputs(n_sg, sigma_xg, tau_sg, s)
            # channel_inputs clips a negative tau (interpolation noise of
            # GPAW's pseudo tau) to 0, where E no longer depends on tau
            tau_clipped = (tau_sg[s] if nspins == 2 else tau_sg[0]).reshape(-1) < 0.0
            if source.grid and source.tau_guess:
                tau = initial_tau(n, sig)
                tau_clipped[:] = False
            a_i, a_derivs = fn.chain.exponents(n, sig, tau)
            efac = 0.5 if nspins == 2 else 1.0       # e_g = efac * cx * exc(channel)
            G, dG, direct = source.features(s, n, a_i, shape)
            if source.grid and not source.tau_guess:
                self.last_grid_inputs[s] = (n, sig, tau, G, efac)
            res = fn.exchange(n, sig, tau, G, dG, a_derivs)
            vdirect = source.respond(s, res.vG, direct, cx, efac)
            vrho = (res.vrho + vdirect).reshape(shape)
            vtau = res.vtau
            if tau_clipped.any():
                vtau = np.where(tau_clipped, 0.0, vtau)
            if nspins == 1:
                e_g += cx * res.exc.reshape(shape)
                dedn_sg[0] += cx * vrho
                dedsigma_xg[0] += cx * res.vsigma.reshape(shape)
                dedtau_sg[0] += cx * vtau.reshape(shape)
            else:
                e_g += 0.5 * cx * res.exc.reshape(shape)
                dedn_sg[s] += cx * vrho
                dedsigma_xg[2 * s] += 2.0 * cx * res.vsigma.reshape(shape)
                dedtau_sg[s] += cx * vtau.reshape(shape)
        for coef, kernel in parts:
            e_p = np.zeros_like(e_g)
            v_p = np.zeros_like(dedn_sg)
            ds_p = np.zeros_like(dedsigma_xg)
            if kernel.type == "MGGA":
                dt_p = np.zeros_like(dedtau_sg)
                kernel.calculate(e_p, n_sg, v_p, sigma_xg, ds_p, tau_sg, dt_p)
                dedtau_sg += coef * dt_p
            elif kernel.type == "GGA":
                kernel.calculate(e_p, n_sg, v_p, sigma_xg, ds_p)
            else:
                kernel.calculate(e_p, n_sg, v_p)
            e_g += coef * e_p
            dedn_sg += coef * v_p
            dedsigma_xg += coef * ds_p


class CiderXC(MGGA):
    """A CIDER functional for GPAW.

    >>> from gpaw import GPAW, PW
    >>> from cider_xc.gpaw import CiderXC
    >>> calc = GPAW(mode=PW(500), xc=CiderXC(), kpts=(4, 4, 4))

    Parameters
    ----------
    functional : CiderFunctional or str, optional
        The functional (``cider_xc.load_model(name)``) or a name/path for
        :func:`cider_xc.load_model`; None is the shipped default.
    exponent_ratio : float
        Spacing of the exponent lattice of the FFT features (smaller is more
        accurate and slower; 1.3 gives ~1e-4 in the transformed features).
    onsite : 'local' or 'pbe'
        PAW on-site corrections with the local approximation of the
        nonlocal features (default), or with PBE exchange in place of the
        CIDER exchange (only to measure how much the on-site treatment
        matters).
    paw_features : 'nonlocal' (default) or 'local'
        'nonlocal': PAW-consistent features (cider_xc.gpaw.paw): the on-site
        terms use the grid's FFT features interpolated to the radial
        points, the grid features include compensation functions with the
        multipole moments of n^a - n~^a, and the all-electron term adds the
        exact one-centre features of the rest of n^a - n~^a.  'local': the
        on-site terms use the local approximation of the features for both
        partial densities (the pseudo-density's grid features inside the
        spheres are then not cancelled): about 2.5x cheaper per SCF
        iteration and off by 1-2 eV per atom in total energies (README).
    onsite_reuse : bool
        With paw_features='nonlocal': atoms whose on-site densities and
        features equal those of an earlier atom on Lebedev directions
        permuted by a cubic point operation (or unpermuted: translated
        copies), to a relative 1e-11, take that atom's kernel output
        instead of evaluating the kernel again (crystals; checked every
        call, so it never changes a result beyond that tolerance).
    point_spacing : float
        With paw_features='nonlocal': the grid features are interpolated
        from the FFT grid (periodic B-splines) only on radial shells at
        most this many grid spacings apart, and from those to every radial
        shell by Lagrange interpolation in r (cider_xc.gpaw.shells; GPAW's
        radial grids crowd most shells near the nucleus).  0 interpolates
        on every shell.  README: size of the effect.
    """

    def __init__(self, functional=None, exponent_ratio=1.3, stencil=2, onsite="local",
                 paw_features="nonlocal", onsite_reuse=True, point_spacing=0.25):
        import os

        import cider_xc
        self.source = None
        if functional is None or isinstance(functional, str) or hasattr(functional, "__fspath__"):
            self.source = None if functional is None else os.fspath(functional)
            functional = cider_xc.load_model(functional)
        if not isinstance(functional, cider_xc.CiderFunctional):
            raise TypeError(f"CiderXC needs a CiderFunctional (cider_xc.load_model(...)), "
                            f"got {type(functional).__name__}")
        if paw_features not in ("local", "nonlocal"):
            raise ValueError(f"paw_features must be 'local' or 'nonlocal', not {paw_features!r}")
        if paw_features == "nonlocal" and onsite != "local":
            raise ValueError("paw_features='nonlocal' needs onsite='local'")
        self.paw_features = paw_features
        self.onsite_reuse = bool(onsite_reuse)
        if not (point_spacing >= 0.0 and np.isfinite(point_spacing)):
            raise ValueError(f"point_spacing must be >= 0, not {point_spacing!r}")
        self.point_spacing = float(point_spacing)
        self._paw_cache = {}
        self._paw_tables = None          # PAWCaches: tables of PAWFeatures kept between calls
        self.last_paw = None
        self._keep_for_forces = None
        self._spos_ac = None
        self._density = None
        self.functional = functional
        self.exponent_ratio = float(exponent_ratio)
        super().__init__(CiderKernel(functional, onsite), stencil=stencil)
        self.name = "CIDER"
        self._conv = None
        self.timings = {"features": 0.0, "calls": 0, "gpaw_mgga": 0.0}

    # --- GPAW's XC object contract -------------------------------------
    def domain_report(self):
        """The out-of-domain statistics of the last grid call (the converged
        density after an SCF): :meth:`CiderFunctional.domain_summary` over
        the 3-D grid points (weights |e_x^LDA| dv), summed over MPI domains;
        None for a model without GP data or before any grid call."""
        fn = self.functional
        inputs = self.kernel.last_grid_inputs
        if fn.gp is None or fn.cider_x == 0.0 or not inputs or self.gd is None:
            return None
        from cider_xc.model import lda_exchange
        thr, frac = fn.domain_thresholds()
        sums = fn.domain_sums_of(
            ((fn.chain.transform(n, sig, tau, G)[0],
              efac * np.abs(lda_exchange(n)[0]) * self.gd.dv)
             for _, (n, sig, tau, G, efac) in sorted(inputs.items())), thr)
        mx = np.array([sums[3]])
        self.gd.comm.max(mx)
        tot = sums[:3].copy()
        self.gd.comm.sum(tot)
        return fn.domain_summary(np.concatenate([tot, mx]), thr, frac)

    def summary(self, log):
        """GPAW's end-of-SCF summary: one line on the out-of-domain check
        (a WARNING when the calculation leans on points the model has not
        seen, with the calibrated thresholds of the model file)."""
        super().summary(log)
        rep = self.domain_report()
        self.last_domain_report = rep
        if rep is None:
            return
        if rep["out_of_domain"]:
            log(f"WARNING: CIDER functional {self.functional.name} is outside its training "
                f"domain here: {100 * rep['weight_above_threshold']:.1f}% of the exchange "
                f"energy comes from points the model has not seen (GP std > "
                f"{rep['threshold']:.3g}; warning above "
                f"{100 * rep['weight_fraction_threshold']:.1f}%); estimated exchange error "
                f"scale {rep['exchange_error_scale'] * 27.211386:.2g} eV. Treat the result "
                f"with care.")
        else:
            log(f"CIDER domain check: {100 * rep['weight_above_threshold']:.2f}% of the "
                f"exchange energy from points with GP std > {rep['threshold']:.3g} (warning "
                f"above {100 * rep['weight_fraction_threshold']:.1f}%)")

    def todict(self):
        fn = self.functional
        return {"name": GPW_NAME, "type": "CIDER", "functional": fn.name,
                "source": self.source or fn.name,
                "checksum": fn.header.get("checksum", ""),
                "cider_x": fn.cider_x, "semilocal_xc": fn.semilocal_xc or "",
                "composition": fn.describe(),
                "exponent_ratio": self.exponent_ratio, "stencil": self.stencil_range,
                "onsite": self.kernel.onsite, "paw_features": self.paw_features,
                "point_spacing": self.point_spacing}

    @classmethod
    def from_dict(cls, d, functional=None):
        """Rebuild the XC object from :meth:`todict` output (as stored in a
        .gpw file).  Plain data only: the model is loaded by name/path from
        the model files and must have the recorded checksum."""
        import cider_xc
        if not isinstance(d, dict) or d.get("name") not in GPW_NAMES:
            raise ValueError(f"not a CiderXC description: {d!r}")
        if functional is None:
            source = d.get("source") or d.get("functional")
            try:
                functional = cider_xc.load_model(source)
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"the CIDER functional {source!r} recorded in the file cannot be loaded "
                    f"({err}); pass it explicitly: functional=cider_xc.load_model(path)") from err
        want = d.get("checksum")
        have = functional.header.get("checksum")
        if want and have and want != have:
            raise ValueError(
                f"the CIDER model {functional.name!r} available now differs from the one "
                f"used for the file (checksum {have} != {want}); pass the original model "
                "file with functional=cider_xc.load_model(path)")
        functional = functional.with_composition(
            cider_x=float(d.get("cider_x", functional.cider_x)),
            semilocal_xc=d.get("semilocal_xc", functional.semilocal_xc) or "",
            validate=False)     # parse_semilocal checks it; no PySCF on the GPAW path
        obj = cls(functional, exponent_ratio=float(d.get("exponent_ratio", 1.3)),
                  stencil=int(d.get("stencil", 2)), onsite=str(d.get("onsite", "local")),
                  paw_features=str(d.get("paw_features", "local")),
                  point_spacing=float(d.get("point_spacing", 0.25)))
        obj.source = d.get("source")
        return obj

    def get_description(self):
        return (f"CIDER meta-GGA with nonlocal features ({self.functional.describe()}); "
                f"FFT features, exponent ratio {self.exponent_ratio}; PAW corrections with "
                + ("PAW-consistent (grid-interpolated) features" if self.paw_features == "nonlocal"
                   else "local features"))

    def get_setup_name(self):
        return "PBE"

    def initialize(self, density, hamiltonian, wfs):
        mode = getattr(wfs, "mode", None)
        if mode not in ("pw", "fd"):
            raise ValueError(f"CiderXC supports plane-wave (PW) and finite-difference (FD) "
                             f"modes, not {mode!r}")
        if getattr(wfs, "collinear", True) is False:
            raise ValueError("CiderXC does not support non-collinear spin")
        super().initialize(density, hamiltonian, wfs)
        self._density = density

    def set_positions(self, spos_ac, *args, **kwargs):
        super().set_positions(spos_ac, *args, **kwargs)
        self._spos_ac = np.array(spos_ac, dtype=float)

    def _convolver(self, gd):
        # the FFT features are distributed in slabs over the domain ranks
        comm = gd.comm if gd.comm.size > 1 else None
        key = (tuple(gd.N_c), gd.cell_cv.tobytes(), gd.comm.size, gd.comm.rank)
        if self._conv is None or self._conv[0] != key:
            self._conv = (key, PeriodicGaussianConvolver(gd.cell_cv, gd.N_c,
                                                         self.exponent_ratio, comm=comm))
        return self._conv[1]

    def _orbitals_missing(self):
        """True when GPAW's kinetic-energy density would be None (no
        orbitals or occupations yet: the Hamiltonian of the initial guess)."""
        wfs = getattr(self, "wfs", None)
        if self.fixed_ke or wfs is None or not wfs.kpt_u:
            return False
        kpt = wfs.kpt_u[0]
        return kpt.f_n is None or kpt.psit_nG is None

    def _grid_features(self, gd, nspins):
        """The feature source of one grid call (GridFeatures, with the
        PAW-consistent on-site bookkeeping when paw_features='nonlocal').

        Before any orbitals exist GPAW passes tau~ = 0 (plus the pseudo-core
        part), where the CIDER enhancement factor sits at its one-orbital
        limit everywhere (Si8: first energy 20 eV off).  The CIDER part then
        uses initial_tau(n, sigma) on the grid instead (alpha = 1), which
        only changes the starting Hamiltonian (LCAO guess and first
        eigensolver step), not the SCF solution: Si8 14 -> 13 and Si64
        15 -> 13 iterations (README)."""
        paw = None
        if self.paw_features == "nonlocal" and self.functional.cider_x != 0.0:
            paw = self._onsite_prepare(gd, nspins)
        return GridFeatures(gd, self._convolver(gd), paw=paw,
                            tau_guess=self._orbitals_missing())

    def calculate_impl(self, gd, n_sg, v_sg, e_g):
        t0 = time.perf_counter()
        wfs = getattr(self, "wfs", None)
        if (not self.fixed_ke and wfs is not None
                and any(kpt.f_n is not None and kpt.psit_nG is None for kpt in wfs.kpt_u)):
            raise RuntimeError(
                "CiderXC needs the wave functions for the kinetic-energy density, and this "
                "calculation has none (a .gpw file written without mode='all'?); "
                "write restart files with calc.write(path, mode='all') to continue an SCF")
        ctx = self._grid_features(gd, len(n_sg))
        paw = ctx.paw
        self.last_paw = paw                      # for diagnostics and tests
        t1 = time.perf_counter()
        k0 = self.kernel.grid_time
        with self.kernel.using(ctx):             # GPAW's MGGA calls kernel.calculate
            super().calculate_impl(gd, n_sg, v_sg, e_g)
        # GPAW's own meta-GGA work in this call (gradients, tau from the
        # orbitals, restriction of dE/dtau): what any meta-GGA pays
        t2 = time.perf_counter()
        self.timings["gpaw_mgga"] += t2 - t1 - (self.kernel.grid_time - k0)
        results = paw.evaluate(self.kernel) if paw is not None else None
        t3 = time.perf_counter()
        if paw is not None:
            self.timings["onsite_atoms"] = self.timings.get("onsite_atoms", 0) + len(paw.all_atoms)
            self.timings["onsite_evaluated"] = (self.timings.get("onsite_evaluated", 0)
                                                + paw.n_evaluated)
        shape = v_sg.shape[1:]
        for s, vG, state, _nf, efac in ctx.pending:
            vGp = paw.point_sources(s) if paw is not None else None
            v_feat = ctx.conv.adjoint(ctx.slab_stack(efac * vG, shape), state, vGp=vGp)
            v_sg[s] += ctx.local(v_feat) / efac      # channel density = n_s / efac
            if paw is not None:
                paw.compensation_derivative(s, v_feat)
                if self._keep_for_forces is not None:
                    self._keep_for_forces.setdefault("pending", []).append(
                        (s, state, _nf, v_feat))
        t4 = time.perf_counter()
        if paw is not None:
            for a, dEdD_sp in paw.finish().items():
                results[a][2] += dEdD_sp
            self._paw_cache = results
            if self._keep_for_forces is not None:
                self._keep_for_forces["paw"] = paw
        t5 = time.perf_counter()
        # where the time of the grid call goes (seconds summed over calls):
        # the PAW preparation (radial densities and exponents of the atoms
        # this rank owns, sampling points), the kernel on the grid inside GPAW's MGGA call
        # (FFT features, grid points and PAW point features, the model),
        # the on-site evaluations, the adjoint, and the one-centre adjoint
        for key, dt in (("paw_prepare", t1 - t0), ("grid_kernel", self.kernel.grid_time - k0),
                        ("paw_onsite", t3 - t2), ("adjoint", t4 - t3), ("paw_finish", t5 - t4)):
            self.timings[key] = self.timings.get(key, 0.0) + dt
        self.timings["features"] += t5 - t0
        self.timings["calls"] += 1

    # --- PAW-consistent on-site terms (paw_features='nonlocal') ----------
    def _all_D_asp(self):
        """D_sp of every atom on every rank (small: every rank needs every
        atom's compensation moments; the radial data of an atom are built
        only by the rank of gd.comm that owns it, PAWFeatures).  One sum over
        the ranks of the packed density matrices (each atom's nonzero on its
        owner only: exact)."""
        D_asp = self._density.D_asp
        setups = self.wfs.setups
        natoms = len(setups)
        comm = D_asp.partition.comm
        # decided alike on every rank (a rank-local test would leave the
        # ranks holding every atom out of the collective below: deadlock)
        if comm.size == 1:
            return {a: np.asarray(D_asp[a]) for a in range(natoms)}
        nspins = self.wfs.nspins
        sizes = [nspins * setups[a].ni * (setups[a].ni + 1) // 2 for a in range(natoms)]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        buf = np.zeros(int(offsets[-1]))
        for a in range(natoms):
            if D_asp.partition.rank_a[a] == comm.rank:
                buf[offsets[a]:offsets[a + 1]] = np.asarray(D_asp[a], dtype=float).ravel()
        comm.sum(buf)
        return {a: buf[offsets[a]:offsets[a + 1]].reshape(nspins, -1) for a in range(natoms)}

    def _onsite_prepare(self, gd, nspins):
        """PAWFeatures of this call: the radial densities of the atoms this
        rank owns and the exponents of their radial points (needed by the
        FFT call), the compensation moments of every atom."""
        from .paw import PAWCaches, PAWFeatures, PAWSettings
        if self._density is None or self._spos_ac is None:
            raise RuntimeError("CiderXC(paw_features='nonlocal') was not initialized "
                               "with a density and atomic positions")
        if self._paw_tables is None:
            self._paw_tables = PAWCaches()
        settings = PAWSettings(self.functional.chain, self.exponent_ratio, self.point_spacing,
                               self.onsite_reuse, self._paw_tables, mgga=self)
        paw = PAWFeatures(settings, self._convolver(gd), gd, nspins,
                          self.functional.settings.n_nonlocal)
        paw.add_atoms(self.wfs.setups, self._all_D_asp(), self._spos_ac)
        return paw

    def calculate_paw_correction(self, setup, D_sp, dEdD_sp=None, addcoredensity=True, a=None):
        if self.paw_features != "nonlocal" or self.functional.cider_x == 0.0:
            # GPAW's MGGA radial expansion, on all Lebedev directions at once
            return paw_correction(self, self.kernel, setup, D_sp, dEdD_sp,
                                  addcoredensity=addcoredensity)
        entry = self._paw_cache.get(a)
        if entry is None or not addcoredensity or not np.array_equal(entry[0], D_sp):
            raise RuntimeError(
                "CiderXC(paw_features='nonlocal') computes the PAW corrections together "
                "with the grid features; calculate_paw_correction was called for atom "
                f"{a} without a matching grid call (density matrices differ)")
        if dEdD_sp is not None:
            dEdD_sp += entry[2]
        return entry[1]

    def stress_tensor_contribution(self, n_sg, skip_sum=False):
        """dE_xc/d eps (3, 3) of the grid part, not yet divided by the volume.

        GPAW's meta-GGA terms (e - n v, sigma and tau terms) with the FFT
        features held at their strained values, plus the strain derivative
        of the features themselves (their Gaussian filters change with the
        reciprocal lattice): see PeriodicGaussianConvolver.strain_derivative.
        With paw_features='nonlocal' the on-site energies depend on the
        strain through the features at their radial points: the homogeneous
        strain derivative covers the feature density and the points carried
        along with the cell, and two corrections account for the
        compensation functions and radial grids keeping their shape
        (PAWFeatures.compensation_strain, PAWFeatures.point_strain).  The
        density matrices, hence the on-site densities, are held fixed, as
        in GPAW's stress.
        """
        mode = getattr(getattr(self, "wfs", None), "mode", None)
        if mode != "pw":
            raise NotImplementedError(
                f"CiderXC: the stress tensor needs plane-wave (PW) mode, not {mode!r}")
        gd = self.gd
        ctx = self._grid_features(gd, len(n_sg))
        paw = ctx.paw
        with self.kernel.using(ctx):
            stress_vv = super().stress_tensor_contribution(n_sg, skip_sum=True)
        if paw is not None:
            paw.evaluate(self.kernel)
            coarse = sorted({at.setup.symbol for at in paw.all_atoms if at.grid_sets_width})
            if coarse:
                warnings.warn(
                    f"CiderXC stress: the grid is too coarse for compensation functions of "
                    f"width r_cut/3 ({', '.join(coarse)}), so their width follows the grid "
                    "spacing and the stress misses its strain dependence; use a higher "
                    "plane-wave cutoff for accurate stresses", RuntimeWarning, stacklevel=2)
        shape = n_sg.shape[1:]
        extra_vv = np.zeros((3, 3))
        for s, vG, state, n_feat, efac in ctx.pending:
            vG_full = ctx.slab_stack(efac * vG, shape)
            vGp = paw.point_sources(s) if paw is not None else None
            extra_vv += ctx.conv.strain_derivative(n_feat, vG_full, state, vGp=vGp)
            if paw is not None:
                v_feat = ctx.conv.adjoint(vG_full, state, vGp=vGp)
                extra_vv += paw.compensation_strain(s, v_feat)
                extra_vv += paw.point_strain(ctx.conv.point_gradient(n_feat, vGp, state))
        if paw is not None:            # only symmetric strains are physical
            extra_vv = 0.5 * (extra_vv + extra_vv.T)
        # every rank holds the whole result (sums over the slabs done): add it once
        if gd.comm.rank == 0:
            stress_vv += extra_vv
        if not skip_sum:
            gd.comm.sum(stress_vv)
        return stress_vv

    def add_forces(self, F_av):
        if self.paw_features == "nonlocal" and self.functional.cider_x != 0.0:
            dEdR = self._paw_position_derivative()
            if self.gd.comm.rank == 0:        # every rank holds the full result
                for a, d in dEdR.items():
                    F_av[a] -= d
        super().add_forces(F_av)

    def _paw_position_derivative(self):
        """dE_xc/dR_a at fixed pseudo-density and density matrices, from the
        PAW-consistent features: the radial points of atom a and its
        compensation functions move with it (one extra XC evaluation)."""
        gd = self.gd
        nt_sg = self._density.nt_sg
        keep = {}
        self._keep_for_forces = keep
        try:
            self.calculate(gd, nt_sg.copy())
        finally:
            self._keep_for_forces = None
        paw = keep["paw"]
        conv = self._convolver(gd)
        dEdR = np.zeros((len(paw.all_atoms), 3))
        for s, state, n_feat, v_feat in keep["pending"]:
            grad = conv.point_gradient(n_feat, paw.point_sources(s), state)
            dEdR += paw.point_position_derivative(s, grad)
            dEdR += paw.compensation_position_derivative(s, v_feat)
        return {at.a: dEdR[i] for i, at in enumerate(paw.all_atoms)}

    # forces: the grid energy depends on the atoms only through the density
    # (pseudo-density incl. pseudo-core, handled by GPAW through the
    # potential) and the on-site terms (through dH_asp); MGGA.add_forces adds
    # the pseudo-core kinetic-energy density term.
