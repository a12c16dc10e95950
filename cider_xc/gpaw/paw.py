"""PAW-consistent nonlocal features for CiderXC (``paw_features='nonlocal'``).

GPAW writes E_xc = E[n~] (fine grid) + sum_a (E[n^a] - E[n~^a]) (radial
grids inside the augmentation spheres).  For a nonlocal feature the three
terms must see the same feature field, or the sphere part of the grid term
is not cancelled.  Here every term uses the features of one density,

    n_feat = n~ + n~_c + sum_a sum_{l<=2} Q^a_L g^a_L,

the pseudo-density plus smooth Gaussian compensation functions g^a_L
(unit multipole moment, inside the sphere) carrying the multipole moments
Q^a_L of the all-electron correction Delta^a = n^a - n~^a (valence and
core), so that points outside the spheres see the right charge and dipoles:

* grid points: FFT features of n_feat;
* pseudo on-site term: the same FFT features, interpolated to the radial
  points (PeriodicGaussianConvolver with a PointSet of lattice values on
  sampling shells, carried to every radial shell by cider_xc.gpaw.shells),
  at the exponents of the pseudo on-site density, so the on-site term
  cancels the grid term;
* all-electron on-site term: the same interpolated features at the
  all-electron exponents, plus the features of the remainder
  Delta'^a = Delta^a - sum_L Q^a_L g^a_L of its own atom, by the exact
  one-centre convolution (descriptors/radial.py: Bessel expansion in
  angle, exponent lattice as on the grid).  Delta'^a has no multipoles
  l <= 2; what the grid points and the other atoms' radial points would
  see of it is neglected.

Radial points outside the region where Delta^a is nonzero carry equal
all-electron and pseudo densities; there both terms use the local
approximation of the features and cancel exactly.

Atoms that are images of an earlier atom under a cubic point operation
(equal radial densities and point features, checked every call) reuse its
kernel output (:meth:`PAWFeatures._find_images`).

The on-site energies then depend on the grid density, so they are computed
inside the grid call (CiderXC.calculate_impl), their response is added to
the grid potential before GPAW restricts it, and GPAW's later
calculate_paw_correction calls return the stored energies and dE/dD.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from gpaw.sphere.lebedev import R_nv, Y_nL, weight_n
from gpaw.sphere.spherical_harmonics import Y as solid_harmonic

from ..descriptors.periodic import PointSet, half_complex_weights, reciprocal_vectors
from ..descriptors.radial import RadialGaussianConvolver
from .radial import RadialVariables, channel_inputs, evaluate_kernel
from .sources import RadialFeatures
from .shells import lattice_coords, sampling_shells, shells_adjoint, shells_forward

LCOMP = 2                       # compensation multipoles l <= LCOMP
NLCOMP = (LCOMP + 1) ** 2
# compensation width rc = max(r_cut / 3, rc_min) with exp(-G_ny^2 rc^2 / 4) <=
# exp(-BANDLIMIT) at the grid's Nyquist wave number (aliased weight <= 6e-6).
# The stress holds rc fixed: it is exact when r_cut / 3 sets the width (every
# grid but very coarse ones); a warning is logged otherwise.
BANDLIMIT = 12.0


# on-site reuse: an atom whose radial inputs and features equal those of an
# earlier atom on permuted Lebedev directions takes that atom's kernel output
REUSE_RTOL = 1e-11


def _lebedev_permutations():
    """Index arrays P (48, 50) of the cubic point group O_h on GPAW's
    50-point Lebedev grid: U R_n = R_{P[n]} for every signed permutation
    matrix U (the grid and its weights are invariant under O_h)."""
    import itertools
    perms = []
    for axes in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            U = np.zeros((3, 3))
            U[range(3), axes] = signs
            X = R_nv @ U.T
            d = np.abs(X[:, None, :] - R_nv[None, :, :]).max(-1)
            P = d.argmin(1)
            if d[np.arange(len(P)), P].max() > 1e-10 or len(set(P.tolist())) != len(P):
                raise AssertionError("Lebedev grid is not O_h invariant")
            if np.abs(weight_n[P] - weight_n).max() > 1e-14:
                raise AssertionError("Lebedev weights are not O_h invariant")
            perms.append(P)
    return np.array(perms)


@functools.lru_cache(maxsize=None)
def lebedev_permutations():
    return _lebedev_permutations()


_ROTATIONS = {}


def harmonic_rotation(P, nL):
    """R (nL, nL) with Y_nL[Pinv[m], L] = sum_L' R[L, L'] Y_nL[m, L'] on the
    Lebedev directions (Pinv the inverse of the point-operation permutation
    P): the real spherical harmonics (l <= 4) rotate among themselves, and
    the 50-point grid integrates their products exactly.  For an image atom
    whose per-direction inputs are X_i[n] = X_j[P[n]], a sum
    sum_n Y_nL F_i(n) is R applied to atom j's."""
    key = (np.asarray(P).tobytes(), nL)
    R = _ROTATIONS.get(key)
    if R is None:
        Y = Y_nL[:, :nL]
        Pinv = np.argsort(P)
        R = 4.0 * math.pi * (Y[Pinv] * weight_n[:, None]).T @ Y
        if np.abs(Y[Pinv] - Y @ R.T).max() > 1e-12:
            raise AssertionError("spherical harmonics do not rotate on the Lebedev grid")
        _ROTATIONS[key] = R
    return R


def _close(x, y, rtol=REUSE_RTOL):
    """max |x - y| <= rtol max |y| (both arrays of one shape)."""
    return y.size == 0 or bool(np.abs(x - y).max() <= rtol * np.abs(y).max())


class _Atom:
    """Radial data of one atom for one grid call."""

    def __init__(self, a, setup, D_sp, spos_c, nspins):
        xcc = setup.xc_correction
        rgd = xcc.rgd
        self.a = a
        self.setup = setup
        self.xcc = xcc
        self.rgd = rgd
        self.D_sp = D_sp.copy()
        self.spos_c = spos_c
        Lmax = xcc.Lmax
        self.Lmax = Lmax
        self.dnq_qg = xcc.n_qg - xcc.nt_qg
        dcore_g = xcc.nc_g - xcc.nct_g
        D_sLq = np.inner(D_sp, xcc.B_pqL.T)
        Delta = D_sLq @ self.dnq_qg                                  # (s, L, g)
        Delta[:, 0] += math.sqrt(4 * math.pi) / nspins * dcore_g
        # radial points where the correction density lives
        big = np.abs(self.dnq_qg).max(0) + np.abs(dcore_g)
        nz = np.nonzero(big > 1e-12 * big.max())[0]
        self.g_in = int(nz[-1]) + 2 if len(nz) else 1
        self.g_in = min(self.g_in, rgd.N)
        r = rgd.r_g
        ls = np.array([int(math.isqrt(L)) for L in range(NLCOMP)])
        self.l_L = ls
        # moment weights r^l r^2 dr
        self.mom_Lg = r[None, :] ** ls[:, None] * (r ** 2 * rgd.dr_g)[None, :]
        self.Q_sL = (Delta[:, :NLCOMP] * self.mom_Lg).sum(-1)
        self.mom_Lq = self.mom_Lg @ self.dnq_qg.T        # dQ_L / dD_Lq
        self.D_sLq = D_sLq
        self.dcore_g = dcore_g
        self.dEdQ_grid = np.zeros((nspins, NLCOMP))      # filled after the adjoint
        self.onecentre = None                            # RadialGaussianConvolver
        self.oc_state = [None] * nspins
        self.oc_grid = [None] * nspins     # image atoms: the grid part of the ae entries
        self.reused = False

    def set_shape(self, rc):
        """Gaussian compensation functions g_l(r) = c_l r^l exp(-r^2/rc^2)
        with unit moment; Delta' = Delta - sum_L Q_L g_l Y_L."""
        self.beta = 1.0 / rc ** 2
        r = self.rgd.r_g
        c_l = np.array([2.0 * self.beta ** (l + 1.5) / math.gamma(l + 1.5)
                        for l in range(LCOMP + 1)])
        self.c_l = c_l
        self.g_Lg = (c_l[self.l_L][:, None] * r[None, :] ** self.l_L[:, None]
                     * np.exp(-self.beta * r ** 2)[None, :])

    def drop_radial(self):
        """Keep only what every rank needs of an atom another rank owns
        (PAWFeatures: its compensation functions, Q_L and width, and its
        place in the point layout); the radial arrays go."""
        self.dnq_qg = self.mom_Lg = self.mom_Lq = self.D_sLq = None
        self.dcore_g = self.g_Lg = None

    def basis(self):
        """Radial basis of Delta': the partial-wave products n_q - n~_q, the
        core difference and the compensation shapes g_0, g_1, g_2."""
        g_lg = self.g_Lg[[l * l for l in range(LCOMP + 1)]]
        return np.concatenate([self.dnq_qg, self.dcore_g[None], g_lg])

    def comp_index(self):
        """Basis index of the compensation shape g_l of each L < NLCOMP."""
        return len(self.dnq_qg) + 1 + self.l_L

    def coefficients(self, s, nspins):
        """C_Lb of Delta'_sL = sum_b C_Lb basis_b for spin s."""
        nq = len(self.dnq_qg)
        C = np.zeros((self.Lmax, nq + 2 + LCOMP))
        C[:, :nq] = self.D_sLq[s]
        C[0, nq] = math.sqrt(4 * math.pi) / nspins
        C[np.arange(NLCOMP), self.comp_index()] = -self.Q_sL[s]
        return C


class PAWCaches:
    """Tables of the PAW-consistent features that outlive one grid call
    (held by the XC object): sampling shells per setup, one-centre
    convolvers per setup and width, compensation spectra of one grid."""

    def __init__(self):
        self.shells = {}
        self.onecentre = {}
        self.compensation = None


class PAWSettings:
    """What PAWFeatures takes from the XC object that runs it: the
    functional's feature chain, the settings of the PAW-consistent
    features (CiderXC's parameters of the same names), its caches, and
    ``mgga``, the GPAW MGGA object whose initialize_kinetic builds a
    setup's kinetic-energy tables (cider_xc.gpaw.radial.kinetic_tables)."""

    def __init__(self, chain, exponent_ratio, point_spacing, onsite_reuse, caches, mgga):
        self.chain = chain
        self.mgga = mgga
        self.exponent_ratio = float(exponent_ratio)
        self.point_spacing = float(point_spacing)
        self.onsite_reuse = bool(onsite_reuse)
        self.caches = caches


class PAWFeatures:
    """One grid call's on-site bookkeeping (see the module docstring).

    Sequence: ``add_atoms`` (radial densities of every atom on all Lebedev
    directions, cider_xc.gpaw.radial, and the exponents of every radial
    point), ``points(s)`` and ``compensation(s)`` for the spin channel's
    FFT call, ``set_features``, ``evaluate(kernel)`` (energies and dE/dD
    of the on-site terms, dE/dG of the points), ``point_sources(s)`` for
    the adjoint, ``compensation_derivative(s, v_feat)`` and ``finish()``.

    Atoms over the ranks of the grid (the convolver's slab communicator,
    GPAW's gd.comm): atom a is *owned* by rank a % size, and only its owner
    builds and keeps its radial data (densities on all directions, the
    exponents, features and dE/dG of its radial entries, their lattice
    coordinates, its one-centre state): ``atoms`` lists the owned atoms,
    ``all_atoms`` every atom (the owned ones plus, for the others, what
    every rank needs: compensation moments Q_L, width, position, place in
    the point layout).  The sampling points of every atom (positions and
    lattice windows, small) are known on every rank, the convolver shares
    them out by slab, and the point features and point sources are summed
    over the ranks; the on-site energies, dE/dD and dE/dR of every atom
    are summed over the ranks too (each computed by its owner only, so the
    sums are exact and every rank ends with the numbers of a serial call).
    Symmetry-equivalent images (:meth:`_find_images`) are looked for among
    the atoms of one rank.  Serially every atom is owned.
    """

    def __init__(self, settings, convolver, gd, nspins, nf):
        self.settings = settings
        self.nspins = nspins
        self.f = 2.0 if nspins == 2 else 1.0       # channel density = f n_s
        self.nf = nf
        self.atoms = []          # the atoms this rank owns (radial data)
        self.all_atoms = []      # every atom (the others without radial data)
        self.N_c = np.array(gd.N_c)
        self.cell_cv = gd.cell_cv
        h = np.linalg.norm(gd.cell_cv, axis=1) / gd.N_c
        self.h = float(h.max())
        self.g_nyquist = math.pi / h.max()
        self.conv = convolver

    # --- setup ------------------------------------------------------------
    def add_atoms(self, setups, D_asp, spos_ac):
        """D_asp: the density matrices of every atom (on every rank)."""
        rc_min = math.sqrt(4.0 * BANDLIMIT) / self.g_nyquist
        lay = self.conv.layout
        for a, D_sp in D_asp.items():
            setup = setups[a]
            if setup.xc_correction is None:
                raise ValueError(f"atom {a} ({setup.symbol}) has no PAW xc correction "
                                 "data; paw_features='nonlocal' needs PAW setups")
            at = _Atom(a, setup, D_sp, spos_ac[a], self.nspins)
            rcut = min(setup.rcut_j) if len(setup.rcut_j) else 1.0
            at.set_shape(max(rcut / 3.0, rc_min))
            at.grid_sets_width = rc_min > rcut / 3.0
            if at.xcc.nc_corehole_g is not None:
                raise ValueError(f"atom {a} ({setup.symbol}): core-hole setups are not "
                                 "supported with paw_features='nonlocal'")
            at.gi = len(self.all_atoms)                  # index in all_atoms
            self.all_atoms.append(at)
            if at.gi % lay.size != lay.rank:
                at.drop_radial()                         # another rank's atom
                continue
            at.onecentre = self._onecentre(at)
            # n, sigma, tau on every radial point of both partial densities
            at.rv = {ae: RadialVariables(self.settings.mgga, at.xcc, at.D_sp, ae) for ae in (True, False)}
            self.atoms.append(at)
        self._find_images()
        # entry layout: per atom, Lebedev direction n, radial index g < g_in
        self.offsets = np.cumsum([0] + [len(R_nv) * at.g_in for at in self.atoms])
        M = int(self.offsets[-1])
        self.a_spe = np.zeros((self.nspins, M, 2 * self.nf))
        self.W_spe = np.zeros_like(self.a_spe)       # dE/dG of the entries (eval pass)
        self.G_spe = np.zeros_like(self.a_spe)       # features at the points (FFT call)
        self.dG_spe = np.zeros_like(self.a_spe)
        self._spectra = None
        self._groups_cache = None
        # exponents of the entries: the kernel's own exponents of the radial
        # points (channel_inputs + FeatureChain.exponents, as in CiderKernel)
        chain = self.settings.chain
        for i, at in enumerate(self.atoms):
            for ae, rv in at.rv.items():
                for s in range(self.nspins):
                    a_i = chain.exponents(*channel_inputs(rv.n_sng, rv.sigma_xng,
                                                          rv.tau_sng, s))[0]
                    self.entries(self.a_spe, s, i, ae)[:] = \
                        a_i.reshape((self.nf,) + rv.shape)[:, :, :at.g_in]
        self._sampling_points()

    def _sampling_points(self):
        """The FFT call's points: the sampling shells of every atom
        (cider_xc.gpaw.shells) on all Lebedev directions, with the lattice
        values k that the entries of the shells they serve need (a window
        of n_lattice values from klo per sampling shell).  The windows
        come from the exponents of the owned atoms and are summed over the
        ranks; the positions of every atom's points are made on every rank."""
        conv = self.conv
        lay = conv.layout
        step = self.settings.point_spacing * self.h
        cache = self.settings.caches.shells
        nn = len(R_nv)
        for at in self.all_atoms:
            key = (id(at.xcc), at.g_in, round(step, 12))
            if key not in cache:
                cache[key] = sampling_shells(at.rgd.r_g, at.g_in, step)
            at.keep, at.sidx, at.swts = cache[key]
        windows = []
        for i, at in enumerate(self.atoms):
            shape = (self.nspins, nn, at.g_in, 2 * self.nf)
            at.lat = (np.empty(shape, dtype=np.int64), np.empty(shape), np.empty(shape),
                      np.empty((self.nspins, at.g_in, 2), dtype=np.int64))
            for s in range(self.nspins):
                lattice_coords(self._entry_block(self.a_spe, s, i), conv.t_floor,
                               conv.inv_logr, *(x[s] for x in at.lat))
            lo = at.lat[3][:, :, 0].min(0)
            hi = at.lat[3][:, :, 1].max(0)
            nc = len(at.keep)
            klo = np.full(nc, 1 << 60)
            khi = np.full(nc, -(1 << 60))
            for o in range(at.sidx.shape[1]):
                used = at.swts[:, o] != 0.0
                np.minimum.at(klo, at.sidx[used, o], lo[used])
                np.maximum.at(khi, at.sidx[used, o], hi[used])
            at.klo = klo
            windows.append(khi - klo + 1)
        E = int(max(w.max() for w in windows)) if windows else 1
        # the first lattice value of every sampling shell of every atom
        soffsets = np.cumsum([0] + [len(at.keep) for at in self.all_atoms])
        if lay.distributed:
            buf = np.array([float(E)])
            lay.comm.max(buf)
            E = int(buf[0])
            klo = np.zeros(int(soffsets[-1]))           # exact: small integers
            for at in self.atoms:
                klo[soffsets[at.gi]:soffsets[at.gi + 1]] = at.klo
            lay.sum(klo)
            klo = klo.astype(np.int64)
        else:
            klo = np.concatenate([at.klo for at in self.atoms]) if self.atoms else \
                np.zeros(0, dtype=np.int64)
        self.n_lattice = E
        self.poffsets = np.cumsum([0] + [nn * len(at.keep) for at in self.all_atoms])
        Mp = int(self.poffsets[-1])
        xp = np.empty((Mp, 3))
        dxp = np.empty((Mp, 3))
        klo_p = np.empty(Mp, dtype=np.int64)
        inv = np.linalg.inv(self.cell_cv)
        for i, at in enumerate(self.all_atoms):
            ps = slice(self.poffsets[i], self.poffsets[i + 1])
            r = at.rgd.r_g[at.keep]
            cart = R_nv[:, None, :] * r[None, :, None]          # (n, c, 3)
            frac = at.spos_c[None, None, :] + cart @ inv
            xp[ps] = (frac * self.N_c).reshape(-1, 3)
            dxp[ps] = cart.reshape(-1, 3)
            klo_p[ps] = np.broadcast_to(klo[None, soffsets[i]:soffsets[i + 1]],
                                        (nn, len(at.keep))).reshape(-1)
        self.xp = xp                 # grid-index coordinates of the sampling points
        self.dxp = dxp               # their Cartesian offsets from their atom
        self.klo_p = klo_p           # point p needs the lattice values klo_p[p] + (0..E-1)

    def _points_of(self, i):
        """Slice of owned atom i's sampling points in the point arrays."""
        g = self.atoms[i].gi
        return slice(self.poffsets[g], self.poffsets[g + 1])

    def _entry_block(self, X_spe, s, i):
        """Contiguous view (direction, radial, entry) of atom i's entries."""
        at = self.atoms[i]
        return X_spe[s, self.offsets[i]:self.offsets[i + 1]].reshape(len(R_nv), at.g_in, -1)

    def _onecentre(self, at):
        """The one-centre convolver of Delta' (its tables depend only on the
        setup, the compensation width and the exponent lattice: cached on
        the CiderXC object)."""
        cache = self.settings.caches.onecentre
        key = (id(at.xcc), round(at.beta, 12), self.settings.exponent_ratio, at.g_in)
        conv = cache.get(key)
        if conv is None:
            lmax = int(math.isqrt(at.Lmax - 1))
            conv = RadialGaussianConvolver(at.rgd.r_g, at.rgd.r_g ** 2 * at.rgd.dr_g,
                                           at.basis(), lmax, at.g_in,
                                           ratio=self.settings.exponent_ratio)
            cache[key] = conv
        return conv

    def entries(self, X_spe, s, i, ae=True):
        """View (nf, direction, radial) of the all-electron (ae) or pseudo
        entries of atom i in a per-point array X_spe (spin, point, entry)."""
        at = self.atoms[i]
        ps = slice(self.offsets[i], self.offsets[i + 1])
        e0 = 0 if ae else self.nf
        view = X_spe[s, ps, e0:e0 + self.nf].reshape(len(R_nv), at.g_in, self.nf)
        assert np.shares_memory(view, X_spe)     # writes through it must land
        return view.transpose(2, 0, 1)

    def ae_entries(self, X_spe, s, i):
        return self.entries(X_spe, s, i, True)

    # --- FFT call of spin channel s --------------------------------------
    def points(self, s):
        return PointSet(self.xp, lattice=self.klo_p, lattice_width=self.n_lattice)

    def set_features(self, s, Gp, dGp):
        """Grid features at the radial points, plus (all-electron entries)
        the one-centre features of each atom's Delta'."""
        nn = len(R_nv)
        for i, at in enumerate(self.atoms):
            Dc = Gp[self._points_of(i)].reshape(nn, len(at.keep), -1)
            shells_forward(self._entry_block(self.a_spe, s, i), *(x[s] for x in at.lat), Dc,
                           at.klo, at.sidx, at.swts, self._entry_block(self.G_spe, s, i),
                           self._entry_block(self.dG_spe, s, i))
        # an image atom (_find_images: equal radial densities on permuted
        # directions, so equal Delta' and all-electron exponents) takes its
        # representative's one-centre features on the permuted directions;
        # evaluate() computes its own if the image is not reused after all
        reps = {}
        needed = {at.image[0] for at in self.atoms if at.image is not None}
        for i, at in enumerate(self.atoms):
            if at.image is not None and at.image[0] in reps:
                j, P = at.image
                G1, dG1 = (x[:, P] for x in reps[j])
                at.oc_grid[s] = (self.ae_entries(self.G_spe, s, i).copy(),
                                 self.ae_entries(self.dG_spe, s, i).copy())
                at.oc_state[s] = None
            else:
                G1, dG1, at.oc_state[s] = self._onecentre_forward(i, s)
                if i in needed:
                    reps[i] = (G1, dG1)
            self.ae_entries(self.G_spe, s, i)[:] += G1
            self.ae_entries(self.dG_spe, s, i)[:] += dG1

    def _onecentre_forward(self, i, s):
        at = self.atoms[i]
        C = self.f * at.coefficients(s, self.nspins)
        return at.onecentre.forward(C, Y_nL, self.ae_entries(self.a_spe, s, i))

    def _own_onecentre(self, i):
        """An image atom that is evaluated after all: its own one-centre
        features (the same arithmetic as for any other atom)."""
        at = self.atoms[i]
        for s in range(self.nspins):
            if at.oc_state[s] is None:
                G1, dG1, at.oc_state[s] = self._onecentre_forward(i, s)
                g, dg = at.oc_grid[s]
                self.ae_entries(self.G_spe, s, i)[:] = g + G1
                self.ae_entries(self.dG_spe, s, i)[:] = dg + dG1
                at.oc_grid[s] = None

    def _shape_spectra(self):
        """Per atom (F, key, p_c): F (L, G) the analytic Fourier transforms of
        its compensation functions on the half-complex grid (rfftn layout,
        times N/volume; shared by atoms of one width, cached on the XC
        object), and the separable phase exp(-i G.R_a) = p_0(m_0) p_1(m_1)
        p_2(m_2), p_c(m) = exp(-2 pi i m s_c) for G = sum_c m_c b_c and
        fractional position s."""
        lay = self.conv.layout
        key = (tuple(self.N_c), self.cell_cv.tobytes(), lay.y0, lay.y1)
        caches = self.settings.caches
        cache = caches.compensation
        if cache is not None and cache[0] == key:
            Gv, shapes = cache[1], cache[2]
        else:
            # the local rows of the half-complex grid (slab layout)
            Gv = np.ascontiguousarray(lay.recip_rows(reciprocal_vectors(self.cell_cv,
                                                                        self.N_c)))
            shapes = {}
            caches.compensation = (key, Gv, shapes)
        self.Gv = Gv
        vol = abs(np.linalg.det(self.cell_cv))
        Ntot = float(np.prod(self.N_c))
        N0, N1, N2 = (int(n) for n in self.N_c)
        m_c = (np.fft.fftfreq(N0, 1.0 / N0), np.fft.fftfreq(N1, 1.0 / N1)[lay.y0:lay.y1],
               np.arange(N2 // 2 + 1, dtype=float))
        out = []
        for at in self.all_atoms:
            k = round(at.beta, 12)
            F = shapes.get(k)
            if F is None:
                F = self._spectrum(at.beta, Gv, Ntot / vol)
                shapes[k] = F
            p_c = [np.exp(-2j * math.pi * m * sc) for m, sc in zip(m_c, at.spos_c)]
            out.append((F, k, p_c))
        return out

    @staticmethod
    def _spectrum(beta, Gv, scale):
        """F_L(G) (L, grid) of c_l r^l exp(-beta r^2) Y_L, times scale."""
        g2 = (Gv ** 2).sum(-1)
        env = np.exp(-g2 / (4.0 * beta))
        F = np.empty((NLCOMP,) + g2.shape, dtype=complex)
        for L in range(NLCOMP):
            l = int(math.isqrt(L))
            pre = 2.0 * math.pi ** 1.5 / (math.gamma(l + 1.5) * 2 ** l)
            y = solid_harmonic(L, Gv[..., 0], Gv[..., 1], Gv[..., 2])
            F[L] = ((-1j) ** l * pre * scale) * env * y
        return F

    def _phase(self, i):
        """exp(-i G.R_a) of atom i on the half-complex grid."""
        p0, p1, p2 = self._spectra[i][2]
        return p0[:, None, None] * p1[None, :, None] * p2[None, None, :]

    def _groups(self):
        """Atoms sharing one compensation spectrum: [(F, indices, P0, P12)]
        with P0 (atoms, N0) and P12 (atoms, N1 * N2h) the phase factors."""
        if self._spectra is None:
            self._spectra = self._shape_spectra()
        groups = {}
        for i, (F, k, _p) in enumerate(self._spectra):
            groups.setdefault(k, (F, []))[1].append(i)
        out = []
        for F, idx in groups.values():
            P0 = np.array([self._spectra[i][2][0] for i in idx])
            P12 = np.array([np.outer(self._spectra[i][2][1], self._spectra[i][2][2]).ravel()
                            for i in idx])
            out.append((F, idx, P0, P12))
        return out

    def compensation(self, s):
        """f * sum_a sum_L Q_asL g_aL(r) on the grid (channel units; the
        convolver's real-space slab).

        Per group of atoms sharing F: sum_L F_L(G) S_L(G) with the structure
        factors S_L(m0, m1, m2) = sum_a Q_aL p0_a(m0) [p1_a p2_a](m1, m2), one
        complex matrix product over the atoms."""
        if self._groups_cache is None:
            self._groups_cache = self._groups()
        N0 = int(self.N_c[0])
        spec = None
        for F, idx, P0, P12 in self._groups_cache:
            Q = np.array([self.all_atoms[i].Q_sL[s] for i in idx])      # (a, L)
            A = (Q.T[:, None, :] * P0.T[None, :, :]).reshape(NLCOMP * N0, len(idx))
            S = (A @ P12).reshape(F.shape)
            c = np.einsum("L...,L...->...", F, S)
            spec = c if spec is None else spec + c
        return self.f * self.conv.layout.irfftn(spec)

    def _dual(self, v_feat):
        """X(G) with sum_r dv v(r) g(r) = Re sum_G X(G) F(G) phase(G) for a
        function g = irfftn(F phase): the half-complex weights, conj(V) and
        dv / N (irfftn convention), times the channel factor f."""
        lay = self.conv.layout
        Ntot = float(np.prod(self.N_c))
        dv = abs(np.linalg.det(self.cell_cv)) / Ntot
        V = lay.rfftn(v_feat)
        return (self.f * dv / Ntot) * lay.recip_rows(half_complex_weights(self.N_c)) * np.conj(V)

    def compensation_derivative(self, s, v_feat):
        """dE/dQ_asL of the grid feature density, v_feat = dE/dn_feat per
        volume on the full grid (channel units): Re sum_G F_L X p0 p1 p2
        per atom, as two matrix products over the phase factors."""
        X = self._dual(v_feat)
        if self._groups_cache is None:
            self._groups_cache = self._groups()
        N0 = int(self.N_c[0])
        for F, idx, P0, P12 in self._groups_cache:
            Y = (F * X[None]).reshape(NLCOMP * N0, -1)
            Z = (Y @ P12.T).reshape(NLCOMP, N0, len(idx))            # (L, m0, a)
            d = self.conv.layout.sum(np.real(np.einsum("Lma,am->aL", Z, P0)))
            for j, i in enumerate(idx):
                self.all_atoms[i].dEdQ_grid[s] += d[j]

    def compensation_position_derivative(self, s, v_feat):
        """dE/dR_a (natoms, 3) of the compensation functions moving with
        their atoms (every atom, all_atoms order), v_feat = dE/dn_feat per
        volume (channel units)."""
        X = self._dual(v_feat)
        out = np.zeros((len(self.all_atoms), 3))
        for i, (at, (F, _k, _p)) in enumerate(zip(self.all_atoms, self._spectra)):
            spec = np.tensordot(at.Q_sL[s], F, axes=(0, 0)) * self._phase(i) * X
            # d phase / dR = -i G phase
            out[i] = np.real(np.tensordot(-1j * spec, self.Gv,
                                          axes=(list(range(spec.ndim)),
                                                list(range(spec.ndim)))))
        return self.conv.layout.sum(out)

    def compensation_strain(self, s, v_feat):
        """(3, 3) correction to the homogeneous strain derivative for the
        compensation functions, v_feat = dE/dn_feat per volume (channel units).

        Under the strain r -> (1 + eps) r the atoms move with the cell but
        g(r - R_a) keeps its shape, while the homogeneous strain derivative
        (PeriodicGaussianConvolver.strain_derivative) deforms it with the
        cell (g -> g((1 + eps)^-1 x) / det).  The difference, at fixed r,
        is delta_vw g + x_w d_v g (x = r - R_a), whose Fourier transform is
        -G_v dF/dG_w for a transform F(G) (times the atom's phase)."""
        X = self._dual(v_feat)
        Gv = self.Gv
        g2 = (Gv ** 2).sum(-1)
        scale = float(np.prod(self.N_c)) / abs(np.linalg.det(self.cell_cv))
        out = np.zeros((3, 3))
        h = 1e-3
        for i, (at, (F, _k, _p)) in enumerate(zip(self.all_atoms, self._spectra)):
            S = np.tensordot(at.Q_sL[s], F, axes=(0, 0))            # sum_L Q_L F_L
            env = np.exp(-g2 / (4.0 * at.beta))
            x = X * self._phase(i)
            for w in range(3):
                # d/dG_w of the solid harmonics: central differences are exact
                # for their (degree <= 2) polynomials
                Gp, Gm = Gv.copy(), Gv.copy()
                Gp[..., w] += h
                Gm[..., w] -= h
                dY = 0.0
                for L in range(NLCOMP):
                    l = int(math.isqrt(L))
                    pre = 2.0 * math.pi ** 1.5 / (math.gamma(l + 1.5) * 2 ** l)
                    dYL = (solid_harmonic(L, Gp[..., 0], Gp[..., 1], Gp[..., 2])
                           - solid_harmonic(L, Gm[..., 0], Gm[..., 1], Gm[..., 2])) / (2 * h)
                    dY = dY + (at.Q_sL[s, L] * (-1j) ** l * pre * scale) * dYL
                dS = -Gv[..., w] / (2.0 * at.beta) * S + env * dY
                for v in range(3):
                    out[v, w] -= np.real(np.sum(x * Gv[..., v] * dS))
        return self.conv.layout.sum(out)

    def point_strain(self, grad_px):
        """(3, 3) correction to the homogeneous strain derivative for the
        radial points: they sit at R_a + d_p with fixed Cartesian offsets d_p,
        not at (1 + eps)(R_a + d_p); grad_px = dE/dx_p (grid-index units)."""
        inv = np.linalg.inv(self.cell_cv)
        grad_pv = grad_px @ (inv * self.N_c[None, :]).T
        return -grad_pv.T @ self.dxp

    def point_position_derivative(self, s, grad_px):
        """dE/dR_a (natoms, 3; every atom) from dE/dx_p of the radial points
        (grid-index units; every point, summed over the ranks)."""
        inv = np.linalg.inv(self.cell_cv)
        grad_pv = grad_px @ (inv * self.N_c[None, :]).T
        return np.array([grad_pv[self.poffsets[i]:self.poffsets[i + 1]].sum(0)
                         for i in range(len(self.all_atoms))])

    # --- on-site evaluation -------------------------------------------------
    def _find_images(self):
        """at.image = (j, P) for an atom i whose on-site densities (n, sigma,
        tau of both partial densities) equal those of an earlier
        representative atom j on Lebedev directions permuted by P (cubic
        point group; the identity covers translated copies), within
        REUSE_RTOL.  :meth:`evaluate` then also compares the features at
        the radial points and, if they agree, reuses atom j's kernel output
        on the permuted directions instead of evaluating the kernel again."""
        reps = []
        perms = lebedev_permutations() if self.settings.onsite_reuse else None
        for i, at in enumerate(self.atoms):
            at.image = None
            if perms is None:
                continue
            arrays = [x for ae in (True, False)
                      for x in (at.rv[ae].n_sng, at.rv[ae].sigma_xng, at.rv[ae].tau_sng)]
            avg = weight_n @ at.rv[True].n_sng.transpose(1, 0, 2).reshape(len(weight_n), -1)
            for j, avg_j, arrays_j in reps:
                if (self.atoms[j].xcc is not at.xcc or avg.shape != avg_j.shape
                        or not _close(avg, avg_j, 1e3 * REUSE_RTOL)):
                    continue
                # candidate permutations from one radial shell, then all arrays
                n0, n0j = arrays[0], arrays_j[0]
                g = int(np.argmax(np.ptp(n0j[0], axis=0)))
                for P in perms:
                    if not _close(n0[:, :, g], n0j[:, P, g], 1e3 * REUSE_RTOL):
                        continue
                    if all(_close(x, y[:, P]) for x, y in zip(arrays, arrays_j)):
                        at.image = (j, P)
                        break
                if at.image is not None:
                    break
            if at.image is None:
                reps.append((i, avg, arrays))

    def _image_valid(self, i):
        """Do the features at atom i's radial points equal its
        representative's on the permuted directions?"""
        j, P = self.atoms[i].image
        for X in (self.G_spe, self.dG_spe):
            for s in range(self.nspins):
                for ae in (True, False):
                    if not _close(self.entries(X, s, i, ae), self.entries(X, s, j, ae)[:, P]):
                        return False
        return True

    def evaluate(self, kernel):
        """The on-site terms of every atom with the features of this call
        (after the FFT call): {a: [D_sp, E_a, dE_a/dD_sp]} of GPAW's PAW
        correction E[n^a] - E[n~^a] - e_xc0 (the feature parts of dE/dD are
        added by :meth:`finish`), and the point weights dE/dG for the
        adjoint (:meth:`point_sources`).  Atoms that are images of an
        earlier atom (:meth:`_find_images`, checked again here on the
        features) take its kernel output on permuted directions.

        Each rank evaluates the atoms it owns; with the grid distributed
        over several ranks the energies and dE/dD are summed over the ranks
        (each computed on its owner only), so every rank returns every
        atom's numbers, those of a serial call."""
        lay = self.conv.layout
        out = {}
        kept = {}
        needed = {at.image[0] for at in self.atoms if at.image is not None}
        n_evaluated = 0
        E_a = np.zeros(len(self.all_atoms))
        dE_a = [np.zeros_like(at.D_sp) for at in self.all_atoms]
        for i, at in enumerate(self.atoms):
            reuse = at.image is not None and self._image_valid(i)
            at.reused = reuse
            if not reuse:
                n_evaluated += 1
                if at.image is not None:
                    self._own_onecentre(i)
            E = -at.xcc.e_xc0
            dEdD_sp = dE_a[at.gi]
            for ae, rv in at.rv.items():
                if reuse:
                    j, P = at.image
                    res = tuple(x[..., P, :] for x in kept[j][ae])
                    for s in range(self.nspins):
                        self.entries(self.W_spe, s, i, ae)[:] = \
                            self.entries(self.W_spe, s, j, ae)[:, P]
                else:
                    res = evaluate_kernel(kernel, rv, RadialFeatures(self, i, ae))
                    if i in needed:
                        kept.setdefault(i, {})[ae] = res
                e, dE = rv.energy_and_derivative(*res)
                E += e
                dEdD_sp += dE
            E_a[at.gi] = E
        if lay.distributed:
            pack = lay.sum(np.concatenate([[float(n_evaluated)], E_a]
                                          + [d.ravel() for d in dE_a]))
            n_evaluated = int(round(pack[0]))
            E_a = pack[1:1 + len(E_a)]
            o = 1 + len(E_a)
            for d in dE_a:
                d[:] = pack[o:o + d.size].reshape(d.shape)
                o += d.size
        self.n_evaluated = n_evaluated          # over all ranks
        for g, at in enumerate(self.all_atoms):
            out[at.a] = [at.D_sp, float(E_a[g]), dE_a[g]]
        return out

    def features(self, i, ae, s, a_ig, nch):
        """G, dG/da (nf, points) on every radial point (direction-major) of
        one partial density of atom i, and the direct dG/dn_ch (local
        approximation outside the correction region, where the all-electron
        and pseudo densities are equal and their terms cancel)."""
        at = self.atoms[i]
        gi = at.g_in
        pref = (np.pi / a_ig) ** 1.5
        G = nch[None, :] * pref
        dG = -1.5 * G / a_ig
        direct = pref.copy()
        shape = (self.nf, len(R_nv), -1)
        G.reshape(shape)[:, :, :gi] = self.entries(self.G_spe, s, i, ae)
        dG.reshape(shape)[:, :, :gi] = self.entries(self.dG_spe, s, i, ae)
        direct.reshape(shape)[:, :, :gi] = 0.0
        return G, dG, direct

    def store(self, i, ae, s, vG_ig):
        """vG_ig: d(e_g)/dG per volume (nf, points) on the radial points of
        one partial density of atom i (e_g as written to GPAW: spin factor
        and CIDER fraction included)."""
        at = self.atoms[i]
        gi = at.g_in
        sign = 1.0 if ae else -1.0
        w_ng = sign * weight_n[:, None] * at.rgd.dv_g[None, :gi]
        vG = vG_ig.reshape(self.nf, len(R_nv), -1)[:, :, :gi]
        self.entries(self.W_spe, s, i, ae)[:] = vG * w_ng[None]

    def point_sources(self, s):
        """dE/dD_k at the sampling points (the adjoint of set_features)."""
        nn = len(R_nv)
        S = np.zeros((int(self.poffsets[-1]), self.n_lattice))
        for i, at in enumerate(self.atoms):
            Sc = S[self._points_of(i)].reshape(nn, len(at.keep), -1)
            j, f, _sc, need = (x[s] for x in at.lat)
            shells_adjoint(self._entry_block(self.a_spe, s, i), j, f, need,
                           self._entry_block(self.W_spe, s, i), at.klo, at.sidx, at.swts, Sc)
        # every atom's sources on every rank (each atom's on its owner only: exact)
        return self.conv.layout.sum(S)

    # --- dE/dD of the feature terms ------------------------------------------
    def finish(self):
        """dE/dD_sp of the nonlocal-feature dependence on the correction
        density: the one-centre features of Delta' and the compensation
        moments Q_L (which enter Delta' and the grid feature density).
        {a: dE/dD_sp} of every atom (computed by its owner, summed over the
        ranks)."""
        out = {}
        kept = {}
        for i, at in enumerate(self.atoms):
            nq = len(at.dnq_qg)
            dD_sLq = np.zeros_like(at.D_sLq)
            for s in range(self.nspins):
                if at.oc_state[s] is None:
                    # a reused image (dE/dG of its entries = its representative's
                    # on permuted directions): the adjoint, a sum over
                    # directions with Y_nL, is the representative's rotated
                    j, P = at.image
                    dCj = kept[(j, s)]
                    dC = harmonic_rotation(P, len(dCj)) @ dCj
                else:
                    dC = self.f * at.onecentre.adjoint(self.ae_entries(self.W_spe, s, i),
                                                       at.oc_state[s])
                    kept[(i, s)] = dC
                dQ = at.dEdQ_grid[s] - dC[np.arange(NLCOMP), at.comp_index()]
                dD_sLq[s] = dC[:, :nq]
                dD_sLq[s, :NLCOMP] += dQ[:, None] * at.mom_Lq
            B = at.xcc.B_pqL
            out[at.a] = np.inner(dD_sLq.transpose(0, 2, 1).reshape(len(dD_sLq), -1),
                                 B.reshape(len(B), -1))
        lay = self.conv.layout
        if not lay.distributed:
            return out
        full = [out.get(at.a, np.zeros_like(at.D_sp)) for at in self.all_atoms]
        pack = lay.sum(np.concatenate([d.ravel() for d in full]))
        o = 0
        for at, d in zip(self.all_atoms, full):
            out[at.a] = pack[o:o + d.size].reshape(d.shape)
            o += d.size
        return out
