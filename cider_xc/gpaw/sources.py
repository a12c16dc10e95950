"""Feature sources of CiderKernel: where the nonlocal features G_i of the
points of one kernel call come from.

CiderKernel.evaluate(source, ...) takes one of these explicitly;
CiderKernel.calculate (GPAW's kernel contract, called by GPAW's MGGA code)
uses the source of the enclosing ``with kernel.using(source)`` block.

* :class:`LocalFeatures`: G_i ~ n (pi/a_i)^{3/2} at the point itself.
* :class:`GridFeatures`: FFT features of GPAW's fine grid (one grid call).
* :class:`RadialFeatures`: the PAW-consistent features of one partial
  density of one atom (cider_xc.gpaw.paw.PAWFeatures).

Each has ``grid`` (True for the 3-D grid), ``features(s, n, a_i, shape)``
-> (G, dG/da, direct dG/dn or None) and ``respond(s, vG, direct, cx, efac)``
-> the direct part of dE/dn at the points, keeping what its adjoint needs.
"""
from __future__ import annotations

import numpy as np


class LocalFeatures:
    """Feature source of the local approximation G_i(r) ~ n(r) (pi/a_i(r))^{3/2}
    (exact in the uniform gas only): PAW radial grids with
    paw_features='local', and any kernel call outside a grid call."""

    grid = False

    def features(self, s, n, a_i, shape):
        """G, dG/da (nf, points) of channel s and the direct dG/dn."""
        pref = (np.pi / a_i) ** 1.5
        G = n[None, :] * pref
        return G, -1.5 * G / a_i, pref

    def respond(self, s, vG, direct, cx, efac):
        """The direct part of dE/dn (per channel density) at the points
        themselves, given vG = dexc/dG (nf, points) of channel s; e_g holds
        efac * cx * exc of the channel.  Sources whose features depend on
        densities elsewhere keep what their adjoint needs."""
        return (vG * direct).sum(axis=0)


LOCAL_FEATURES = LocalFeatures()


class RadialFeatures:
    """Feature source of one partial density (all-electron or pseudo) of
    one atom in the PAW-consistent treatment (paw_features='nonlocal'):
    the grid's features interpolated to its radial points
    (:class:`cider_xc.gpaw.paw.PAWFeatures`)."""

    grid = False

    def __init__(self, paw, i, ae):
        self.paw, self.i, self.ae = paw, i, ae

    def features(self, s, n, a_i, shape):
        return self.paw.features(self.i, self.ae, s, a_i, n)

    def respond(self, s, vG, direct, cx, efac):
        self.paw.store(self.i, self.ae, s, efac * cx * vG)
        return (vG * direct).sum(axis=0)


class SlabRedistributor:
    """GPAW's domain blocks <-> the slabs of the FFT features.

    GPAW distributes its fine grid over ``gd.comm`` in blocks (its domain
    decomposition, any of the three axes); the convolver
    (:class:`cider_xc.descriptors.periodic.PeriodicGaussianConvolver` with
    ``comm=gd.comm``) works on slabs of the first axis
    (:class:`cider_xc.descriptors.slabs.SlabLayout`).  One all-to-all moves
    a stack of arrays either way; no rank holds more than its share of the
    grid.  Points of the padded global grid that no block holds (the zero
    plane of non-periodic FD directions) take ``fill`` in the slab."""

    def __init__(self, gd, layout):
        self.gd = gd
        self.layout = layout
        self.comm = gd.comm
        P = gd.comm.size
        if layout.size != P or tuple(layout.N_c) != tuple(int(n) for n in gd.N_c):
            raise ValueError("slab layout and grid descriptor differ")
        boxes = []
        for r in range(P):
            pos = np.unravel_index(r, tuple(gd.parsize_c))
            boxes.append(([int(gd.n_cp[c][pos[c]]) for c in range(3)],
                          [int(gd.n_cp[c][pos[c] + 1]) for c in range(3)]))
        self.boxes = boxes
        b, e = boxes[gd.comm.rank]
        if list(b) != [int(x) for x in gd.beg_c] or list(e) != [int(x) for x in gd.end_c]:
            raise RuntimeError("CiderXC: unexpected rank order of GPAW's domain decomposition")
        self.beg_c, self.end_c = b, e

    def _exchange(self, chunks, rcounts):
        """One alltoallv of float chunks (flat), rcounts[s] from rank s."""
        return self.layout._alltoallv(chunks, rcounts, float)

    def to_slab(self, x, fill=0.0):
        """Local block (..., n0, n1, n2) -> slab (...,) + layout.real_shape."""
        lay = self.layout
        lead = x.shape[:-3]
        nl = int(np.prod(lead, dtype=int))
        b, e = self.beg_c, self.end_c
        if lay.size == 1 and x.shape[-3:] == lay.real_shape:
            return np.asarray(x, dtype=float)           # the whole grid: no copy
        out = np.full(lead + lay.real_shape, fill, dtype=float)
        if lay.size == 1:
            out[..., b[0]:e[0], b[1]:e[1], b[2]:e[2]] = x
            return out
        chunks, rcounts = [], []
        for r in range(lay.size):
            i0, i1 = max(b[0], lay.x_p[r]), min(e[0], lay.x_p[r + 1])
            chunks.append(x[..., i0 - b[0]:i1 - b[0], :, :].ravel() if i1 > i0
                          else np.empty(0))
            br, er = self.boxes[r]
            j0, j1 = max(br[0], lay.x0), min(er[0], lay.x1)
            rcounts.append(nl * max(j1 - j0, 0) * (er[1] - br[1]) * (er[2] - br[2]))
        rbuf, rdispls = self._exchange(chunks, rcounts)
        for r in range(lay.size):
            if not rcounts[r]:
                continue
            br, er = self.boxes[r]
            j0, j1 = max(br[0], lay.x0), min(er[0], lay.x1)
            out[..., j0 - lay.x0:j1 - lay.x0, br[1]:er[1], br[2]:er[2]] = \
                rbuf[rdispls[r]:rdispls[r] + rcounts[r]].reshape(
                    lead + (j1 - j0, er[1] - br[1], er[2] - br[2]))
        return out

    def to_block(self, X):
        """Slab (...,) + layout.real_shape -> local block (..., n0, n1, n2)."""
        lay = self.layout
        b, e = self.beg_c, self.end_c
        if lay.size == 1:
            return X[..., b[0]:e[0], b[1]:e[1], b[2]:e[2]]
        lead = X.shape[:-3]
        nl = int(np.prod(lead, dtype=int))
        out = np.empty(lead + tuple(int(y - x) for x, y in zip(b, e)))
        chunks, rcounts = [], []
        for r in range(lay.size):
            br, er = self.boxes[r]
            j0, j1 = max(br[0], lay.x0), min(er[0], lay.x1)
            chunks.append(X[..., j0 - lay.x0:j1 - lay.x0, br[1]:er[1], br[2]:er[2]].ravel()
                          if j1 > j0 else np.empty(0))
            i0, i1 = max(b[0], lay.x_p[r]), min(e[0], lay.x_p[r + 1])
            rcounts.append(nl * max(i1 - i0, 0) * (e[1] - b[1]) * (e[2] - b[2]))
        rbuf, rdispls = self._exchange(chunks, rcounts)
        for r in range(lay.size):
            if not rcounts[r]:
                continue
            i0, i1 = max(b[0], lay.x_p[r]), min(e[0], lay.x_p[r + 1])
            out[..., i0 - b[0]:i1 - b[0], :, :] = rbuf[rdispls[r]:rdispls[r] + rcounts[r]] \
                .reshape(lead + (i1 - i0, e[1] - b[1], e[2] - b[2]))
        return out


class GridFeatures:
    """Feature source of one grid call: FFT features of the fine grid (plus
    the PAW compensation functions and radial points when ``paw`` is a
    PAWFeatures), the adjoint left pending for the XC object.

    The convolver works on slabs of the grid distributed over ``gd.comm``
    (each rank ~1/P of it; the whole grid when serial): the densities,
    exponents and adjoint sources go from GPAW's domain blocks to the slabs
    and the features and potentials back (:class:`SlabRedistributor`).

    tau_guess: True when GPAW has no orbitals yet (its first Hamiltonian);
    the grid tau is then replaced by initial_tau(n, sigma)."""

    grid = True

    def __init__(self, gd, convolver, paw=None, tau_guess=False):
        self.gd = gd
        self.conv = convolver
        self.redist = SlabRedistributor(gd, convolver.layout)
        self.paw = paw              # PAWFeatures (paw_features='nonlocal') or None
        self.tau_guess = bool(tau_guess)
        self.pending = []           # (spin, vG weight, state, n_feat slab, efac) for the adjoint
        self._channel = None

    def slab(self, x_g, fill=0.0):
        """The convolver's slab of a local grid array (or stack of them; the
        array itself when one rank holds the whole grid: do not modify it)."""
        return self.redist.to_slab(x_g, fill)

    def slab_stack(self, x_ig, shape):
        """Slabs (nf,) + slab shape of per-feature local arrays x_ig (nf, npoints)."""
        return self.redist.to_slab(np.asarray(x_ig).reshape((len(x_ig),) + tuple(shape)))

    def local(self, X):
        """GPAW's local block of a slab array (or stack of them)."""
        return self.redist.to_block(X)

    def features(self, s, n, a_i, shape):
        a_slab = self.slab_stack(a_i, shape)
        # padding planes of non-periodic FD grids hold no density; any
        # positive exponent will do there (they are dropped again)
        bad = a_slab <= 0.0
        if bad.any():
            a_slab = np.where(bad, 1.0, a_slab)
        n_slab = self.slab(n.reshape(shape))
        if self.paw is not None:
            n_slab = n_slab + self.paw.compensation(s)
            G, dG, state, Gp, dGp = self.conv.forward(n_slab, a_slab,
                                                      points=self.paw.points(s))
            self.paw.set_features(s, Gp, dGp)
        else:
            n_slab = np.array(n_slab)      # kept for the adjoint and the stress
            G, dG, state = self.conv.forward(n_slab, a_slab)
        self._channel = (state, n_slab)
        nf = len(a_i)
        return self.local(G).reshape(nf, -1), self.local(dG).reshape(nf, -1), None

    def respond(self, s, vG, direct, cx, efac):
        # energy of this channel = efac * int (cx vG) dG[n_feat]: adjoint later
        state, n_slab = self._channel
        self.pending.append((s, cx * vG, state, n_slab, efac))
        return 0.0
