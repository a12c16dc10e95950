"""Density fitting of the orbital density for the nonlocal features.

n(r) = sum_{mu nu} D_{mu nu} phi_mu(r) phi_nu(r) is fitted in an
even-tempered auxiliary basis generated from the orbital basis (PySCF's
``aug_etb``), in the Coulomb metric:

    c = J^{-1} b,   J_PQ = (P|Q),   b_P = sum_{mu nu} (P|mu nu) D_{mu nu}.

Because the auxiliary exponents are generated from the orbital exponents, a
uniformly scaled basis gives a uniformly scaled fit, which keeps the exact
scaling of the nonlocal features.  The features computed from c (see
:mod:`cider_xc.descriptors.convolution`) are those of the fitted density;
``benchmarks``/tests measure how far they lie from the exact density's.

The map D -> c is linear, so the potential of the nonlocal part is
V_{mu nu} = sum_P (J^{-1} dE/dc)_P (P|mu nu): a Coulomb-like matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
from pyscf import df, gto, lib

from ..descriptors.convolution import SolidGaussianSet

ETB_BETA = 2.0
METRIC_CUTOFF = 1e-12   # relative eigenvalue cutoff of the Coulomb metric


def make_auxmol(mol, beta=ETB_BETA):
    """Even-tempered auxiliary molecule generated from mol's basis."""
    return df.make_auxmol(mol, df.aug_etb(mol, beta))


def aux_gaussian_set(auxmol):
    """The auxiliary basis as a :class:`SolidGaussianSet` (uncontracted)."""
    centers, ls, zetas, blocks = [], [], [], []
    for ib in range(auxmol.nbas):
        l = auxmol.bas_angular(ib)
        es = auxmol.bas_exp(ib)
        cs = auxmol._libcint_ctr_coeff(ib)
        if len(es) != 1 or cs.shape[1] != 1:
            raise ValueError("the auxiliary basis must be uncontracted")
        centers.append(auxmol.bas_coord(ib))
        ls.append(l)
        zetas.append(es[0])
        blocks.append(cs[0, 0] * gto.cart2sph(l))
    T = scipy.sparse.block_diag(blocks, format="csr")
    return SolidGaussianSet(np.array(centers), np.array(ls), np.array(zetas), T)


class DensityProjector:
    """Linear map from density matrices to auxiliary coefficients and back.

    Built once per geometry and basis (cache it); memory is that of a
    density-fitting Coulomb build: naux * nao (nao+1) / 2 doubles.
    """

    def __init__(self, mol, beta=ETB_BETA):
        self.mol = mol
        self.auxmol = make_auxmol(mol, beta)
        self.gaussians = aux_gaussian_set(self.auxmol)
        j2c = self.auxmol.intor("int2c2e", hermi=1)
        w, u = scipy.linalg.eigh(j2c)
        keep = w > METRIC_CUTOFF * w.max()
        self.n_dropped = int((~keep).sum())
        # the full (ascending) eigendecomposition, for the gradient of J^+
        self.metric_eigenvalues = w
        self.metric_eigenvectors = u
        self._u = u[:, keep]
        self._winv = 1.0 / w[keep]
        # (naux, nao_pair) three-centre Coulomb integrals, packed lower triangle
        self._j3c = np.ascontiguousarray(
            df.incore.aux_e2(mol, self.auxmol, "int3c2e", aosym="s2ij").T)
        nao = mol.nao
        self._diag = np.arange(nao) * (np.arange(nao) + 3) // 2   # i*(i+1)/2 + i
        self.key = geometry_key(mol)

    @property
    def naux(self):
        return self.auxmol.nao

    def _metric_solve(self, b):
        return self._u @ (self._winv * (self._u.T @ b))

    def coefficients(self, dm):
        """Fit coefficients c (naux,) of the density of a (nao, nao) dm."""
        dm = np.asarray(dm)
        dmt = lib.pack_tril(dm + dm.T)
        dmt[self._diag] *= 0.5
        return self._metric_solve(self._j3c @ dmt)

    def potential(self, dE_dc):
        """dE/dD (nao, nao), symmetric, for a given dE/dc."""
        v = self._metric_solve(np.asarray(dE_dc)) @ self._j3c
        return lib.unpack_tril(v)


def geometry_key(mol):
    """What a projector depends on: atoms, positions and basis."""
    return (mol.atom_coords().tobytes(), tuple(mol.elements),
            mol._bas.tobytes(), mol._env.tobytes(), mol.nao)
