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


class GridFeatures:
    """Feature source of one grid call: FFT features of the full fine grid
    (plus the PAW compensation functions and radial points when ``paw`` is
    a PAWFeatures), the adjoint left pending for the XC object.

    tau_guess: True when GPAW has no orbitals yet (its first Hamiltonian);
    the grid tau is then replaced by initial_tau(n, sigma)."""

    grid = True

    def __init__(self, gd, convolver, paw=None, tau_guess=False):
        self.gd = gd
        self.conv = convolver
        self.paw = paw              # PAWFeatures (paw_features='nonlocal') or None
        self.tau_guess = bool(tau_guess)
        self.pending = []           # (spin, vG weight, state, n_feat, efac) for the adjoint
        self._channel = None

    def full(self, x_g):
        glob = self.gd.collect(x_g, broadcast=True)
        return self.gd.zero_pad(glob)

    def full_stack(self, x_ig, shape):
        """Full grids (nf,) + N_c of per-feature local arrays x_ig (nf, npoints)."""
        return np.stack([self.full(x.reshape(shape)) for x in x_ig])

    def local(self, X):
        b, e = self.gd.beg_c, self.gd.end_c
        return X[..., b[0]:e[0], b[1]:e[1], b[2]:e[2]]

    def features(self, s, n, a_i, shape):
        a_full = self.full_stack(a_i, shape)
        # padding planes of non-periodic FD grids hold no density; any
        # positive exponent will do there (they are dropped again)
        a_full[a_full <= 0.0] = 1.0
        n_full = self.full(n.reshape(shape))
        if self.paw is not None:
            n_full = n_full + self.paw.compensation(s)
            G, dG, state, Gp, dGp = self.conv.forward(n_full, a_full,
                                                      points=self.paw.points(s))
            self.paw.set_features(s, Gp, dGp)
        else:
            G, dG, state = self.conv.forward(n_full, a_full)
        self._channel = (state, n_full)
        nf = len(a_i)
        return self.local(G).reshape(nf, -1), self.local(dG).reshape(nf, -1), None

    def respond(self, s, vG, direct, cx, efac):
        # energy of this channel = efac * int (cx vG) dG[n_feat]: adjoint later
        state, n_full = self._channel
        self.pending.append((s, cx * vG, state, n_full, efac))
        return 0.0
