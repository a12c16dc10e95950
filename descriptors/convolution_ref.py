"""Reference kernels of :mod:`.convolution` (tests only).

The straightforward scalar kernels the fast ones replaced: per point, per
centre group, per shell, per feature, with ``math.exp``; the adjoint and the
centre gradient parallel over centre groups.  They define the same sums as
the fast kernels (the same terms: every (point, shell, feature) with
zeta a / (zeta + a) |r - R|^2 <= cutoff) and are kept to check them.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .convolution import (BLOCK, CART_DIDX, CART_LX, CART_LY, CART_LZ, CART_START,
                          EXP_CUTOFF, LMAX)


def convolve(gset, coords, a, c):
    coords = np.ascontiguousarray(coords, dtype=float)
    a = np.ascontiguousarray(a, dtype=float)
    G = np.zeros(a.shape)
    dG = np.zeros(a.shape)
    _forward(coords, a, gset.cartesian(c), gset.centers, gset.l, gset.zeta, gset.cart_off,
             CART_LX, CART_LY, CART_LZ, CART_START, gset.groups, gset.group_zmin,
             gset.group_lmax, EXP_CUTOFF, G, dG)
    return G, dG


def convolve_adjoint(gset, coords, a, u):
    coords = np.ascontiguousarray(coords, dtype=float)
    a = np.ascontiguousarray(a, dtype=float)
    u = np.ascontiguousarray(u, dtype=float)
    out = np.zeros(gset.ncart)
    _adjoint(coords, a, u, gset.centers, gset.l, gset.zeta, gset.cart_off,
             CART_LX, CART_LY, CART_LZ, CART_START, gset.groups, gset.group_zmin,
             gset.group_lmax, EXP_CUTOFF, out)
    return gset.TT @ out


def center_gradient(gset, coords, a, u, c):
    coords, a, u = gset._check_u(coords, a, u)
    out = np.zeros((len(gset.l), 3))
    _center_grad(coords, a, u, gset.cartesian(c), gset.centers, gset.l, gset.zeta,
                 gset.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, CART_DIDX,
                 gset.groups, gset.group_zmin, gset.group_lmax, EXP_CUTOFF, out)
    return out


def point_gradient(gset, coords, a, u, c):
    coords, a, u = gset._check_u(coords, a, u)
    out = np.zeros((len(coords), 3))
    _point_grad(coords, a, u, gset.cartesian(c), gset.centers, gset.l, gset.zeta,
                gset.cart_off, CART_LX, CART_LY, CART_LZ, CART_START, CART_DIDX,
                gset.groups, gset.group_zmin, gset.group_lmax, EXP_CUTOFF, out)
    return out


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_sphere(coords, p0, p1):
    cx = 0.0; cy = 0.0; cz = 0.0
    for g in range(p0, p1):
        cx += coords[g, 0]; cy += coords[g, 1]; cz += coords[g, 2]
    n = p1 - p0
    cx /= n; cy /= n; cz /= n
    r2 = 0.0
    for g in range(p0, p1):
        d = (coords[g, 0] - cx) ** 2 + (coords[g, 1] - cy) ** 2 + (coords[g, 2] - cz) ** 2
        if d > r2:
            r2 = d
    return cx, cy, cz, math.sqrt(r2)


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _shell_far(cx, cy, cz, rad, R, zeta_eff, cutoff):
    d = math.sqrt((R[0] - cx) ** 2 + (R[1] - cy) ** 2 + (R[2] - cz) ** 2) - rad
    return d > 0.0 and zeta_eff * d * d > cutoff


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_amin(a, p0, p1):
    """Smallest exponent of every feature over points p0..p1."""
    amin = a[0, p0]
    for f in range(a.shape[0]):
        for g in range(p0, p1):
            if a[f, g] < amin:
                amin = a[f, g]
    return amin


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _block_table(coords, a):
    """Per point block: bounding-sphere centre (3), radius and the smallest
    exponent, (nblk, 5), for the screening of the centre-parallel kernels."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    bsph = np.empty((nblk, 5))
    for b in range(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        bsph[b, 0] = cx; bsph[b, 1] = cy; bsph[b, 2] = cz
        bsph[b, 3] = rad; bsph[b, 4] = _block_amin(a, p0, p1)
    return bsph


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _point_far(a, g, zmin, d2, cutoff):
    """True if even the most diffuse shell of a group is negligible at point g."""
    ag = a[0, g]
    for f in range(1, a.shape[0]):
        if a[f, g] < ag:
            ag = a[f, g]
    return zmin * ag / (zmin + ag) * d2 > cutoff


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _monomials(dx, dy, dz, lmax, lx, ly, lz, start, px, py, pz, mono):
    """All Cartesian monomials x^i y^j z^k with i+j+k <= lmax into mono."""
    px[0] = 1.0; py[0] = 1.0; pz[0] = 1.0
    for k in range(1, lmax + 1):
        px[k] = px[k - 1] * dx
        py[k] = py[k - 1] * dy
        pz[k] = pz[k - 1] * dz
    for k in range(start[lmax + 1]):
        mono[k] = px[lx[k]] * py[ly[k]] * pz[lz[k]]


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _prefactor(af, za, l):
    """(pi / (zeta + a))^{3/2} (a / (zeta + a))^l, with za = zeta + a."""
    r = af / za
    t = math.pi / za
    pref = t * math.sqrt(t)
    for k in range(l):
        pref *= r
    return pref


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _forward(coords, a, coef, centers, ls, zetas, offs, lx, ly, lz, start,
             grp, grp_zmin, grp_lmax, cutoff, G, dG):
    """G[f, g] += sum_s K_s(r_g; a[f, g]) and dG/da; shells grouped by centre
    (grp[i]..grp[i+1]) so that distances and monomials are shared."""
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    # scratch is allocated outside the parallel loop and indexed by block:
    # numba may hoist allocations out of a prange body and share them
    scratch = np.empty((nblk, 3, LMAX + 1))
    monos = np.empty((nblk, nmono))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        px = scratch[b, 0]; py = scratch[b, 1]; pz = scratch[b, 2]
        mono = monos[b]
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        amin = _block_amin(a, p0, p1)
        for ig in range(ngrp):
            zmin = grp_zmin[ig]
            R = centers[grp[ig]]
            if _shell_far(cx, cy, cz, rad, R, zmin * amin / (zmin + amin), cutoff):
                continue
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start, px, py, pz, mono)
                for s in range(grp[ig], grp[ig + 1]):
                    z = zetas[s]
                    l = ls[s]
                    i0 = start[l]
                    poly = 0.0
                    o = offs[s]
                    for k in range(start[l + 1] - i0):
                        poly += coef[o + k] * mono[i0 + k]
                    if poly == 0.0:
                        continue
                    for f in range(nf):
                        af = a[f, g]
                        za = z + af
                        arg = z * af / za * d2
                        if arg > cutoff:
                            continue
                        v = _prefactor(af, za, l) * math.exp(-arg) * poly
                        G[f, g] += v
                        dG[f, g] += v * (-1.5 / za + l * (1.0 / af - 1.0 / za)
                                         - d2 * (z / za) ** 2)


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _adjoint(coords, a, u, centers, ls, zetas, offs, lx, ly, lz, start,
             grp, grp_zmin, grp_lmax, cutoff, out):
    """out[cart coef of shell s] += sum_{g, f} u[f, g] dK_s(r_g; a[f, g])/dc;
    parallel over centre groups, which own disjoint output entries."""
    N = coords.shape[0]
    nf = a.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    bsph = _block_table(coords, a)
    # scratch allocated outside the parallel loop (numba may hoist allocations
    # out of a prange body and share them between threads)
    scratch = np.empty((ngrp, 3, LMAX + 1))
    monos = np.empty((ngrp, nmono))
    for ig in numba.prange(ngrp):
        px = scratch[ig, 0]; py = scratch[ig, 1]; pz = scratch[ig, 2]
        mono = monos[ig]
        zmin = grp_zmin[ig]
        R = centers[grp[ig]]
        for b in range(nblk):
            amin = bsph[b, 4]
            if _shell_far(bsph[b, 0], bsph[b, 1], bsph[b, 2], bsph[b, 3], R,
                          zmin * amin / (zmin + amin), cutoff):
                continue
            p0 = b * BLOCK
            p1 = min(N, p0 + BLOCK)
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    z = zetas[s]
                    l = ls[s]
                    w = 0.0
                    for f in range(nf):
                        af = a[f, g]
                        za = z + af
                        arg = z * af / za * d2
                        if arg > cutoff or u[f, g] == 0.0:
                            continue
                        w += u[f, g] * _prefactor(af, za, l) * math.exp(-arg)
                    if w == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    i0 = start[l]
                    o = offs[s]
                    for k in range(start[l + 1] - i0):
                        out[o + k] += w * mono[i0 + k]


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _poly_grad(coef, o, l, start, lx, ly, lz, didx, mono):
    """P(d) = sum_k coef[o + k] mono_k and its gradient (from the monomial
    table of degree <= l)."""
    i0 = start[l]
    p = 0.0; gx = 0.0; gy = 0.0; gz = 0.0
    for k in range(start[l + 1] - i0):
        ck = coef[o + k]
        if ck == 0.0:
            continue
        m = i0 + k
        p += ck * mono[m]
        if lx[m] > 0:
            gx += ck * lx[m] * mono[didx[0, m]]
        if ly[m] > 0:
            gy += ck * ly[m] * mono[didx[1, m]]
        if lz[m] > 0:
            gz += ck * lz[m] * mono[didx[2, m]]
    return p, gx, gy, gz


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _shell_weights(a, u, g, z, l, d2, cutoff):
    """W0 = sum_f u K_f / P and W1 = sum_f u 2 beta_f K_f / P at point g, so
    that sum_f u[f, g] grad_d K_f = W0 grad P - W1 d P."""
    w0 = 0.0; w1 = 0.0
    for f in range(a.shape[0]):
        uf = u[f, g]
        if uf == 0.0:
            continue
        af = a[f, g]
        za = z + af
        beta = z * af / za
        arg = beta * d2
        if arg > cutoff:
            continue
        v = uf * _prefactor(af, za, l) * math.exp(-arg)
        w0 += v
        w1 += 2.0 * beta * v
    return w0, w1


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _center_grad(coords, a, u, coef, centers, ls, zetas, offs, lx, ly, lz, start, didx,
                 grp, grp_zmin, grp_lmax, cutoff, out):
    """out[s] += d/dR_s sum_{f,g} u[f, g] K_s(r_g - R_s; a[f, g]) =
    -sum u grad_d K_s; parallel over centre groups (disjoint outputs)."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    bsph = _block_table(coords, a)
    scratch = np.empty((ngrp, 3, LMAX + 1))
    monos = np.empty((ngrp, nmono))
    for ig in numba.prange(ngrp):
        px = scratch[ig, 0]; py = scratch[ig, 1]; pz = scratch[ig, 2]
        mono = monos[ig]
        zmin = grp_zmin[ig]
        R = centers[grp[ig]]
        for b in range(nblk):
            amin = bsph[b, 4]
            if _shell_far(bsph[b, 0], bsph[b, 1], bsph[b, 2], bsph[b, 3], R,
                          zmin * amin / (zmin + amin), cutoff):
                continue
            p0 = b * BLOCK
            p1 = min(N, p0 + BLOCK)
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    w0, w1 = _shell_weights(a, u, g, zetas[s], ls[s], d2, cutoff)
                    if w0 == 0.0 and w1 == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    p, gx, gy, gz = _poly_grad(coef, offs[s], ls[s], start, lx, ly, lz,
                                               didx, mono)
                    out[s, 0] -= w0 * gx - w1 * dx * p
                    out[s, 1] -= w0 * gy - w1 * dy * p
                    out[s, 2] -= w0 * gz - w1 * dz * p


@numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _point_grad(coords, a, u, coef, centers, ls, zetas, offs, lx, ly, lz, start, didx,
                grp, grp_zmin, grp_lmax, cutoff, out):
    """out[g] += sum_{f,s} u[f, g] grad_r K_s(r_g - R_s; a[f, g]); parallel
    over point blocks (disjoint outputs)."""
    N = coords.shape[0]
    nblk = (N + BLOCK - 1) // BLOCK
    ngrp = grp.shape[0] - 1
    nmono = start[LMAX + 1]
    scratch = np.empty((nblk, 3, LMAX + 1))
    monos = np.empty((nblk, nmono))
    for b in numba.prange(nblk):
        p0 = b * BLOCK
        p1 = min(N, p0 + BLOCK)
        px = scratch[b, 0]; py = scratch[b, 1]; pz = scratch[b, 2]
        mono = monos[b]
        cx, cy, cz, rad = _block_sphere(coords, p0, p1)
        amin = _block_amin(a, p0, p1)
        for ig in range(ngrp):
            zmin = grp_zmin[ig]
            R = centers[grp[ig]]
            if _shell_far(cx, cy, cz, rad, R, zmin * amin / (zmin + amin), cutoff):
                continue
            for g in range(p0, p1):
                dx = coords[g, 0] - R[0]
                dy = coords[g, 1] - R[1]
                dz = coords[g, 2] - R[2]
                d2 = dx * dx + dy * dy + dz * dz
                if _point_far(a, g, zmin, d2, cutoff):
                    continue
                have_mono = False
                for s in range(grp[ig], grp[ig + 1]):
                    w0, w1 = _shell_weights(a, u, g, zetas[s], ls[s], d2, cutoff)
                    if w0 == 0.0 and w1 == 0.0:
                        continue
                    if not have_mono:
                        _monomials(dx, dy, dz, grp_lmax[ig], lx, ly, lz, start,
                                   px, py, pz, mono)
                        have_mono = True
                    p, gx, gy, gz = _poly_grad(coef, offs[s], ls[s], start, lx, ly, lz,
                                               didx, mono)
                    out[g, 0] += w0 * gx - w1 * dx * p
                    out[g, 1] += w0 * gy - w1 * dy * p
                    out[g, 2] += w0 * gz - w1 * dz * p
