"""PAW on-site meta-GGA terms on all Lebedev directions at once.

GPAW's radial machinery (gpaw.xc.gga.GGARadialExpansion with
MGGA.mgga_radial) loops over the 50 Lebedev directions of an atom and calls
the XC kernel once per direction and partial density.  This module does the
same arithmetic (the same finite-difference radial derivatives, the same
chain rule to dE/dD_sp) on arrays shaped (spin, direction, radial point), so
that the kernel runs once per atom and partial density:

    rv = RadialVariables(xcc, D_sp, ae=True)    # n, sigma, tau, grad parts
    e_ng, dedn_sng, dedsigma_xng, dedtau_sng = <kernel on rv.n_sng, ...>
    E, dEdD_sp = rv.energy_and_derivative(e_ng, dedn_sng, dedsigma_xng, dedtau_sng)

:func:`paw_correction` is the whole correction E[n^a] - E[n~^a] - e_xc0
for a kernel with GPAW's calculate() contract; it agrees with
MGGA.calculate_paw_correction to rounding (tests/test_gpaw.py).  CiderXC
uses the two halves separately in its PAW-consistent mode, where the
kernel needs the exponents of every radial point before its features exist.
"""
from __future__ import annotations

import math

import numpy as np
from gpaw.sphere.lebedev import Y_nL, weight_n
from gpaw.xc.pawcorrection import rnablaY_nLv

SQRT4PI = math.sqrt(4.0 * math.pi)


def channel_inputs(n_sg, sigma_xg, tau_sg, s):
    """Closed-shell inputs (n, sigma, tau), flat, of spin channel s: the
    density itself when spin-paired, 2 n_s (4 sigma_ss, 2 tau_s) otherwise
    (exact spin scaling); negative rounding noise clipped to 0."""
    if len(n_sg) == 1:
        n, sig, tau = n_sg[0], sigma_xg[0], tau_sg[0]
    else:
        n, sig, tau = 2.0 * n_sg[s], 4.0 * sigma_xg[2 * s], 2.0 * tau_sg[s]
    return (np.maximum(n, 0.0).reshape(-1), np.maximum(sig, 0.0).reshape(-1),
            np.maximum(tau, 0.0).reshape(-1))


def kinetic_tables(xc, xcc):
    """GPAW's tau_npg / taut_npg of a setup (made once, kept on xcc)."""
    if xcc.tau_npg is None:
        xcc.tau_npg, xcc.taut_npg = xc.initialize_kinetic(xcc)
    return xcc.tau_npg, xcc.taut_npg


def _derivative(rgd, x_xg):
    """rgd.derivative along the last axis."""
    d = np.empty_like(x_xg)
    d[..., 0] = x_xg[..., 1] - x_xg[..., 0]
    d[..., 1:-1] = 0.5 * (x_xg[..., 2:] - x_xg[..., :-2])
    d[..., -1] = x_xg[..., -1] - x_xg[..., -2]
    d /= rgd.dr_g
    return d


def _derivative2(rgd, a_xg):
    """rgd.derivative2 along the last axis (the same statements in the same
    order: b[1] and b[-2] are overwritten as in GPAW)."""
    c = a_xg / rgd.dr_g
    b = np.empty_like(c)
    b[..., 0] = 0.5 * c[..., 1] + c[..., 0]
    b[..., 1:-1] = 0.5 * (c[..., 2:] - c[..., :-2])
    b[..., -2] = c[..., -1] - 0.5 * c[..., -3]
    b[..., -1] = -c[..., -1] - 0.5 * c[..., -2]
    return b


class RadialVariables:
    """n, sigma, tau of one partial density (all-electron or pseudo) of one
    atom on every Lebedev direction: arrays (spin or sigma index, direction,
    radial point), in GPAW's conventions (sigma_xng: uu, ud, dd)."""

    def __init__(self, xc, xcc, D_sp, ae, addcoredensity=True):
        rgd = xcc.rgd
        nspins = len(D_sp)
        self.rgd = rgd
        self.xcc = xcc
        self.nspins = nspins
        self.ae = ae
        self.sign = 1.0 if ae else -1.0
        Lmax = xcc.Lmax
        n_qg = xcc.n_qg if ae else xcc.nt_qg
        self.n_qg = n_qg
        D_sLq = np.inner(D_sp, xcc.B_pqL.T)
        n_sLg = D_sLq @ n_qg
        if addcoredensity:
            nc_g = xcc.nc_g if ae else xcc.nct_g
            n_sLg[:, 0] += SQRT4PI / nspins * nc_g
            if ae and xcc.nc_corehole_g is not None and nspins == 2:
                n_sLg[0, 0] -= 0.5 * SQRT4PI * xcc.nc_corehole_g
                n_sLg[1, 0] += 0.5 * SQRT4PI * xcc.nc_corehole_g
        dndr_sLg = _derivative(rgd, n_sLg)
        Y = Y_nL[:, :Lmax]
        rY = rnablaY_nLv[:, :Lmax]
        self.Y = Y
        self.rY = rY
        # C-contiguous: GPAW's libxc wrapper reads the raw buffers
        self.n_sng = np.ascontiguousarray(np.einsum("nL,sLg->sng", Y, n_sLg, optimize=True))
        self.a_sng = np.ascontiguousarray(np.einsum("nL,sLg->sng", Y, dndr_sLg, optimize=True))
        self.b_vsng = np.ascontiguousarray(np.einsum("nLv,sLg->vsng", rY, n_sLg,
                                                     optimize=True))
        nn, ng = self.n_sng.shape[1:]
        sigma = np.empty((2 * nspins - 1, nn, ng))
        sigma[::2] = (self.b_vsng ** 2).sum(0)
        if nspins == 2:
            sigma[1] = (self.b_vsng[:, 0] * self.b_vsng[:, 1]).sum(0)
        sigma[:, :, 1:] /= rgd.r_g[1:] ** 2
        sigma[:, :, 0] = sigma[:, :, 1]
        sigma[::2] += self.a_sng ** 2
        if nspins == 2:
            sigma[1] += self.a_sng[0] * self.a_sng[1]
        self.sigma_xng = sigma
        tau_npg, taut_npg = kinetic_tables(xc, xcc)
        self.tau_npg = tau_npg if ae else taut_npg
        tauc_g = (xcc.tauc_g if ae else xcc.tauct_g) / (SQRT4PI * nspins)
        # (n, s, g) by a broadcast matmul (no copy of the large tau_npg)
        self.tau_sng = np.ascontiguousarray(
            np.matmul(D_sp, self.tau_npg).transpose(1, 0, 2)) + tauc_g
        self.shape = (nn, ng)

    def energy_and_derivative(self, e_ng, dedn_sng, dedsigma_xng, dedtau_sng):
        """E = sum_n w_n int e dv and dE/dD_sp (signed: the pseudo density
        counts negatively) from the kernel's output on every direction."""
        rgd = self.rgd
        xcc = self.xcc
        nspins = self.nspins
        w_n = weight_n
        E = float(w_n @ (e_ng[:, 1:] @ (rgd.r_g[1:] ** 2 * rgd.dr_g[1:]))) * 4.0 * math.pi
        # radial-gradient correction of dE/dn (add_radial_gradient_correction)
        vv = np.empty_like(dedn_sng)
        for s in range(nspins):
            vv[s] = _derivative2(rgd, -2.0 * rgd.dv_g * dedsigma_xng[2 * s] * self.a_sng[s])
        if nspins == 2:
            vv[0] -= _derivative2(rgd, rgd.dv_g * dedsigma_xng[1] * self.a_sng[1])
            vv[1] -= _derivative2(rgd, rgd.dv_g * dedsigma_xng[1] * self.a_sng[0])
        vv[..., 1:] /= rgd.dv_g[1:]
        vv[..., 0] = vv[..., 1]
        v = (dedn_sng + vv) * rgd.dv_g
        wY = w_n[:, None] * self.Y
        dEdD_sqL = np.einsum("sng,qg,nL->sqL", v, self.n_qg, wY, optimize=True)
        ds = dedsigma_xng * rgd.dr_g
        B_vsng = ds[::2][None] * self.b_vsng
        if nspins == 2:
            B_vsng += 0.5 * ds[1][None, None] * self.b_vsng[:, ::-1]
        B_vsnq = B_vsng @ self.n_qg.T
        wrY = (8.0 * math.pi) * w_n[:, None, None] * self.rY
        dEdD_sqL += np.einsum("nLv,vsnq->sqL", wrY, B_vsnq, optimize=True)
        B = xcc.B_pqL
        dEdD_sp = np.inner(dEdD_sqL.reshape(nspins, -1), B.reshape(len(B), -1))
        X_nsg = (dedtau_sng * (w_n[:, None] * rgd.dv_g)).transpose(1, 0, 2)
        dEdD_sp += np.matmul(X_nsg, self.tau_npg.transpose(0, 2, 1)).sum(0)
        return self.sign * E, self.sign * dEdD_sp


def evaluate_kernel(kernel, rv, source=None):
    """The kernel (GPAW's calculate() contract) on all directions of rv:
    returns e_ng, dedn_sng, dedsigma_xng, dedtau_sng.  With a feature
    ``source`` (cider_xc.gpaw.sources) the kernel's evaluate(source, ...)
    is called instead."""
    # flat (spin, point) arrays: GPAW's libxc wrapper counts the points of
    # meta-GGAs along the second axis only
    N = rv.shape[0] * rv.shape[1]
    e = np.empty(N)
    dedn = np.zeros((rv.nspins, N))
    dedsigma = np.zeros((len(rv.sigma_xng), N))
    dedtau = np.zeros((rv.nspins, N))
    args = (e, rv.n_sng.reshape(rv.nspins, N), dedn, rv.sigma_xng.reshape(-1, N).copy(),
            dedsigma, rv.tau_sng.reshape(rv.nspins, N), dedtau)
    if source is None:
        kernel.calculate(*args)
    else:
        kernel.evaluate(source, *args)
    shape = rv.shape
    return (e.reshape(shape), dedn.reshape((-1,) + shape),
            dedsigma.reshape((-1,) + shape), dedtau.reshape((-1,) + shape))


def paw_correction(xc, kernel, setup, D_sp, dEdD_sp=None, addcoredensity=True):
    """E[n^a] - E[n~^a] (- e_xc0 with the core densities) of a meta-GGA
    kernel, as MGGA.calculate_paw_correction, all directions at once."""
    xcc = setup.xc_correction
    if xcc is None:
        return 0.0
    E = 0.0
    for ae in (True, False):
        rv = RadialVariables(xc, xcc, D_sp, ae, addcoredensity)
        e, dE = rv.energy_and_derivative(*evaluate_kernel(kernel, rv))
        E += e
        if dEdD_sp is not None:
            dEdD_sp += dE
    return E - xcc.e_xc0 if addcoredensity else E
