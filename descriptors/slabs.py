"""Slab decomposition of a periodic grid for distributed real FFTs.

A grid of N_c points is split over the P ranks of a communicator:

* real space: rank r holds the planes x0_r <= i0 < x1_r of the first axis
  (all of the other two), shape (x1 - x0, N1, N2);
* reciprocal space (the half-complex rfftn grid, N0 x N1 x (N2//2 + 1)):
  rank r holds the rows y0_r <= m1 < y1_r of the second axis, shape
  (N0, y1 - y0, N2//2 + 1).

``rfftn``/``irfftn`` transform between the two with one all-to-all
transpose each (FFTs along axes 2 and 1 on the real-space slab, transpose,
FFT along axis 0), so that no rank ever holds a whole grid: every array of
the FFT features is ~1/P of the serial one.  Pointwise operations in
reciprocal space (Gaussian filters) act on the local rows; sums over the
grid end with :meth:`SlabLayout.sum`.  ``ghosts``/``add_ghosts`` extend a
real-space slab by the next few planes (periodic wrap), for stencils that
reach past the slab end (B-spline interpolation at off-grid points).

The communicator is any object with ``size``, ``rank``, ``sum(array)``,
``max(array)`` (in place) and ``alltoallv(sbuf, scounts, sdispls, rbuf,
rcounts, rdispls)`` (element counts, int arrays), as GPAW's communicators
have; None is the serial layout, which calls scipy.fft.rfftn/irfftn
directly (the serial numbers are those of a plain FFT).  No GPAW here.
"""
from __future__ import annotations

import numpy as np
import scipy.fft


def split(n, parts):
    """Boundaries (parts + 1,) of n items in parts nearly equal chunks."""
    return np.array([(i * n) // parts for i in range(parts + 1)], dtype=int)


class SerialComm:
    size = 1
    rank = 0

    def sum(self, a):
        return a

    def max(self, a):
        return a


class SlabLayout:
    """Slab decomposition of an N_c grid over ``comm`` (see module doc)."""

    def __init__(self, N_c, comm=None, workers=None):
        self.N_c = tuple(int(n) for n in N_c)
        self.comm = SerialComm() if comm is None else comm
        self.size = int(self.comm.size)
        self.rank = int(self.comm.rank)
        self.workers = workers
        N0, N1, N2 = self.N_c
        self.N2h = N2 // 2 + 1
        self.x_p = split(N0, self.size)
        self.y_p = split(N1, self.size)
        self.x0, self.x1 = (int(x) for x in self.x_p[self.rank:self.rank + 2])
        self.y0, self.y1 = (int(y) for y in self.y_p[self.rank:self.rank + 2])
        self.real_shape = (self.x1 - self.x0, N1, N2)
        self.recip_shape = (N0, self.y1 - self.y0, self.N2h)
        self.distributed = self.size > 1

    # --- slices of global arrays --------------------------------------------
    def real_slice(self, X):
        """The local real-space slab of a global array (..., N0, N1, N2)."""
        return X[..., self.x0:self.x1, :, :]

    def recip_slice(self, X):
        """The local reciprocal rows of a global half-complex array
        (..., N0, N1, N2h) (also for arrays with trailing dimensions when
        ``X`` has the grid axes first: use :meth:`recip_rows`)."""
        return X[..., :, self.y0:self.y1, :]

    def recip_rows(self, X):
        """Local rows of an array whose first three axes are the half-complex grid."""
        return X[:, self.y0:self.y1]

    # --- reductions ---------------------------------------------------------
    def sum(self, x):
        """Sum over the ranks (arrays in place and returned; scalars returned)."""
        if not self.distributed:
            return x
        if np.isscalar(x) or np.ndim(x) == 0:
            buf = np.array([x], dtype=complex if np.iscomplexobj(x) else float)
            self.comm.sum(buf)
            return buf[0]
        x = np.ascontiguousarray(x)
        self.comm.sum(x)
        return x

    def int_range(self, lo, hi):
        """(min lo, max hi) over the ranks (integers)."""
        if not self.distributed:
            return int(lo), int(hi)
        buf = np.array([-int(lo), int(hi)], dtype=np.int64)
        self.comm.max(buf)
        return int(-buf[0]), int(buf[1])

    # --- all-to-all ---------------------------------------------------------
    def _alltoallv(self, chunks, rcounts, dtype):
        """Send chunks[r] (flat arrays) to rank r; receive rcounts[s]
        elements from rank s.  Complex data travel as pairs of doubles.
        Returns the flat receive buffer (source-major)."""
        P = self.size
        scounts = np.array([c.size for c in chunks], dtype=int)
        sdispls = np.zeros(P, dtype=int)
        sdispls[1:] = np.cumsum(scounts)[:-1]
        rcounts = np.asarray(rcounts, dtype=int)
        rdispls = np.zeros(P, dtype=int)
        rdispls[1:] = np.cumsum(rcounts)[:-1]
        sbuf = np.empty(int(scounts.sum()), dtype=dtype)
        for r, c in enumerate(chunks):
            sbuf[sdispls[r]:sdispls[r] + scounts[r]] = c
        rbuf = np.empty(int(rcounts.sum()), dtype=dtype)
        fac = 2 if np.dtype(dtype).kind == "c" else 1
        self.comm.alltoallv(sbuf.view(float) if fac == 2 else sbuf, fac * scounts,
                            fac * sdispls, rbuf.view(float) if fac == 2 else rbuf,
                            fac * rcounts, fac * rdispls)
        return rbuf, rdispls

    # --- distributed FFTs ---------------------------------------------------
    def rfftn(self, a):
        """rfftn of a real-space slab (x1 - x0, N1, N2): the local
        reciprocal rows (N0, y1 - y0, N2h)."""
        if not self.distributed:
            return scipy.fft.rfftn(a, workers=self.workers)
        A = scipy.fft.rfft(a, axis=2, workers=self.workers)
        A = scipy.fft.fft(A, axis=1, overwrite_x=True, workers=self.workers)
        nx = A.shape[0]
        ny = self.y1 - self.y0
        chunks = [A[:, self.y_p[r]:self.y_p[r + 1], :].ravel() for r in range(self.size)]
        rcounts = [(self.x_p[s + 1] - self.x_p[s]) * ny * self.N2h for s in range(self.size)]
        del A
        rbuf, _ = self._alltoallv(chunks, rcounts, complex)
        del chunks
        B = rbuf.reshape(self.recip_shape)     # sources in x order: (N0, ny, N2h)
        del nx
        return scipy.fft.fft(B, axis=0, overwrite_x=True, workers=self.workers)

    def irfftn(self, B):
        """Inverse of :meth:`rfftn`: local reciprocal rows -> real slab."""
        if not self.distributed:
            return scipy.fft.irfftn(B, s=self.N_c, workers=self.workers)
        B = scipy.fft.ifft(B, axis=0, workers=self.workers)
        nx = self.x1 - self.x0
        chunks = [B[self.x_p[s]:self.x_p[s + 1]].ravel() for s in range(self.size)]
        rcounts = [nx * (self.y_p[r + 1] - self.y_p[r]) * self.N2h for r in range(self.size)]
        rbuf, rdispls = self._alltoallv(chunks, rcounts, complex)
        del chunks, B
        A = np.empty((nx, self.N_c[1], self.N2h), dtype=complex)
        for r in range(self.size):
            y0, y1 = self.y_p[r], self.y_p[r + 1]
            A[:, y0:y1, :] = rbuf[rdispls[r]:rdispls[r] + rcounts[r]].reshape(nx, y1 - y0,
                                                                              self.N2h)
        del rbuf
        A = scipy.fft.ifft(A, axis=1, overwrite_x=True, workers=self.workers)
        return scipy.fft.irfft(A, n=self.N_c[2], axis=2, workers=self.workers)

    # --- ghost planes past the slab end ---------------------------------------
    def _ghost_plan(self, rank, nghost):
        """[(owner, local plane)] of the nghost planes after rank's slab."""
        N0 = self.N_c[0]
        x1 = int(self.x_p[rank + 1])
        plan = []
        for i in range(nghost):
            g = (x1 + i) % N0
            owner = int(np.searchsorted(self.x_p, g, side="right") - 1)
            while self.x_p[owner + 1] <= g:      # skip empty slabs
                owner += 1
            plan.append((owner, g - int(self.x_p[owner])))
        return plan

    def ghosts(self, buf, nghost):
        """Fill buf[nloc:nloc + nghost] (the planes after the local slab,
        periodic) from their owners; buf[:nloc] is the local slab."""
        nloc = self.x1 - self.x0
        if not self.distributed:
            for i in range(nghost):
                buf[nloc + i] = buf[i % self.N_c[0]]
            return buf
        plane = buf[0].size
        chunks = []
        for r in range(self.size):
            rows = [buf[lp] for owner, lp in self._ghost_plan(r, nghost) if owner == self.rank]
            chunks.append(np.concatenate([x.ravel() for x in rows]) if rows
                          else np.empty(0, buf.dtype))
        mine = self._ghost_plan(self.rank, nghost)
        rcounts = [plane * sum(1 for owner, _ in mine if owner == s) for s in range(self.size)]
        rbuf, rdispls = self._alltoallv(chunks, rcounts, buf.dtype)
        seen = [0] * self.size
        for i, (owner, _lp) in enumerate(mine):
            o = rdispls[owner] + seen[owner] * plane
            buf[nloc + i] = rbuf[o:o + plane].reshape(buf.shape[1:])
            seen[owner] += 1
        return buf

    def add_ghosts(self, buf, nghost):
        """Transpose of :meth:`ghosts`: add buf[nloc:nloc + nghost] to the
        planes they stand for (on their owners)."""
        nloc = self.x1 - self.x0
        if not self.distributed:
            for i in range(nghost):
                buf[i % self.N_c[0]] += buf[nloc + i]
            return buf
        plane = buf[0].size
        mine = self._ghost_plan(self.rank, nghost)
        chunks = []
        for r in range(self.size):
            rows = [buf[nloc + i] for i, (owner, _lp) in enumerate(mine) if owner == r]
            chunks.append(np.concatenate([x.ravel() for x in rows]) if rows
                          else np.empty(0, buf.dtype))
        rcounts = []
        plans = [self._ghost_plan(s, nghost) for s in range(self.size)]
        for s in range(self.size):
            rcounts.append(plane * sum(1 for owner, _ in plans[s] if owner == self.rank))
        rbuf, rdispls = self._alltoallv(chunks, rcounts, buf.dtype)
        for s in range(self.size):
            o = rdispls[s]
            for owner, lp in plans[s]:
                if owner == self.rank:
                    buf[lp] += rbuf[o:o + plane].reshape(buf.shape[1:])
                    o += plane
        return buf
