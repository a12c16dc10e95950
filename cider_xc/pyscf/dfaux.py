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

    Built once per geometry and basis (cache it).  The three-centre
    integrals (P|mu nu) (naux * nao (nao+1) / 2 doubles, packed pairs) are
    computed in blocks of auxiliary shells and kept in memory when they fit
    into ``max_memory`` (MB, default ``mol.max_memory``) on top of what the
    process already uses, as PySCF's density fitting decides; otherwise they
    go to a temporary HDF5 file and every fit reads them back in blocks
    (the same numbers, rounded in a different order: 1e-15 relative).
    """

    def __init__(self, mol, beta=ETB_BETA, max_memory=None):
        self.mol = mol
        self.max_memory = mol.max_memory if max_memory is None else max_memory
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
        nao = mol.nao
        self._diag = np.arange(nao) * (np.arange(nao) + 3) // 2   # i*(i+1)/2 + i
        self.key = geometry_key(mol)
        self._build_j3c()

    @property
    def naux(self):
        return self.auxmol.nao

    @property
    def incore(self):
        """True when the three-centre integrals are held in memory."""
        return isinstance(self._j3c, np.ndarray)

    def _aux_blocks(self, nrow):
        """(shell0, shell1, p0, p1) blocks of auxiliary shells holding at most
        nrow functions (at least one shell)."""
        aux_loc = self.auxmol.ao_loc_nr()
        nbas = self.auxmol.nbas
        sh0 = 0
        while sh0 < nbas:
            sh1 = sh0 + 1
            while sh1 < nbas and aux_loc[sh1 + 1] - aux_loc[sh0] <= nrow:
                sh1 += 1
            yield sh0, sh1, int(aux_loc[sh0]), int(aux_loc[sh1])
            sh0 = sh1

    def _build_j3c(self):
        mol, auxmol = self.mol, self.auxmol
        nao = mol.nao
        npair = nao * (nao + 1) // 2
        size_mb = self.naux * npair * 8 / 1e6
        free_mb = self.max_memory - lib.current_memory()[0]
        # blocks of about 1/8 of the free memory (at least 16 functions, at
        # most 256 MB): the transient copy of one block is all the build adds
        nrow = int(min(max(free_mb, 0.0) / 8, 256.0) * 1e6 / 8 / max(npair, 1))
        self._blk = max(16, nrow)
        if size_mb < free_mb:
            self._j3c = np.empty((self.naux, npair))
        else:
            self._tmpfile = lib.H5TmpFile()
            self._j3c = self._tmpfile.create_dataset("j3c", (self.naux, npair), "f8")
        for sh0, sh1, p0, p1 in self._aux_blocks(self._blk):
            blk = df.incore.aux_e2(mol, auxmol, "int3c2e", aosym="s2ij",
                                   shls_slice=(0, mol.nbas, 0, mol.nbas, sh0, sh1))
            self._j3c[p0:p1] = blk.T

    def _j3c_blocks(self):
        """(p0, p1, (p1 - p0, npair) block) of the three-centre integrals."""
        if self.incore:
            yield 0, self.naux, self._j3c
            return
        for _, _, p0, p1 in self._aux_blocks(self._blk):
            yield p0, p1, self._j3c[p0:p1]

    def contract_j3c(self, dmt):
        """b = (P|mu nu) dmt for packed pair vectors dmt (npair,) or
        (npair, k)."""
        if self.incore:
            return self._j3c @ dmt
        b = np.empty((self.naux,) + np.shape(dmt)[1:])
        for p0, p1, blk in self._j3c_blocks():
            b[p0:p1] = blk @ dmt
        return b

    def _metric_solve(self, b):
        return self._u @ (self._winv * (self._u.T @ b))

    def coefficients(self, dm):
        """Fit coefficients c (naux,) of the density of a (nao, nao) dm."""
        dm = np.asarray(dm)
        dmt = lib.pack_tril(dm + dm.T)
        dmt[self._diag] *= 0.5
        return self._metric_solve(self.contract_j3c(dmt))

    def potential(self, dE_dc):
        """dE/dD (nao, nao), symmetric, for a given dE/dc."""
        x = self._metric_solve(np.asarray(dE_dc))
        if self.incore:
            v = x @ self._j3c
        else:
            v = 0.0
            for p0, p1, blk in self._j3c_blocks():
                v = v + x[p0:p1] @ blk
        return lib.unpack_tril(v)


def geometry_key(mol):
    """What a projector depends on: atoms, positions and basis."""
    return (mol.atom_coords().tobytes(), tuple(mol.elements),
            mol._bas.tobytes(), mol._env.tobytes(), mol.nao)
