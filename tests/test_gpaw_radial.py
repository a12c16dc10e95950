"""The all-directions PAW on-site expansion (cider_xc.gpaw.radial) against
GPAW's own per-direction radial machinery (MGGA.calculate_paw_correction)."""
import numpy as np
import pytest
from gpaw.setup import create_setup
from gpaw.utilities import pack_density
from gpaw.xc import XC
from gpaw.xc.mgga import MGGA

import cider_xc
from cider_xc.gpaw import CiderXC as _CiderXC
from cider_xc.gpaw.radial import RadialVariables, channel_inputs, paw_correction


#: frozen model file for these machinery checks (as in tests/test_gpaw.py):
#: the 1e-11 agreement is a rounding floor measured on it
REF_MODEL = "cider-pbe0-v1"


def CiderXC(functional=REF_MODEL, **kw):
    return _CiderXC(functional, **kw)


def _density_matrix(setup, nspins, rng):
    """The setup's atomic occupations spread over m, split over spins, plus
    noise (non-spherical, spin-polarised)."""
    f_i = np.concatenate([[f / (2 * l + 1)] * (2 * l + 1)
                          for f, l in zip(setup.f_j, setup.l_j)])
    D_p = pack_density(np.diag(f_i))
    split = [1.0] if nspins == 1 else [0.6, 0.4]
    return np.array([c * D_p for c in split]) + 0.003 * rng.standard_normal((nspins, len(D_p)))


# libxc's r2SCAN alone gives dE/dD differences of 1e-7 between the two
# call layouts when spin-polarised (its own point thresholds): spin-paired only
CASES = [(sym, ns, kind) for sym in ("Si", "O") for ns in (1, 2)
         for kind in ("cider-local", "pbe-fraction", "r2scan") if not (kind == "r2scan" and ns == 2)]


@pytest.mark.parametrize("symbol,nspins,kind", CASES)
def test_all_directions_expansion_equals_gpaw(symbol, nspins, kind):
    """Energy and dE/dD_sp of the whole on-site correction: the vectorised
    expansion reproduces GPAW's loop over directions to rounding, for the
    CIDER kernel (local features), the CIDER kernel with no CIDER fraction
    (pure libxc GGA parts) and a libxc meta-GGA."""
    rng = np.random.default_rng(3)
    setup = create_setup(symbol, XC("PBE"))
    D_sp = _density_matrix(setup, nspins, rng)
    if kind == "cider-local":
        xc = CiderXC(paw_features="local")
    elif kind == "pbe-fraction":
        xc = CiderXC(cider_xc.load(REF_MODEL, cider_x=0.0, semilocal_xc="GGA_X_PBE, GGA_C_PBE"))
    else:
        xc = XC("MGGA_X_R2SCAN+MGGA_C_R2SCAN")
    ref_d = np.zeros_like(D_sp)
    ref = MGGA.calculate_paw_correction(xc, setup, D_sp, ref_d)
    new_d = np.zeros_like(D_sp)
    new = paw_correction(xc, xc.kernel, setup, D_sp, new_d)
    assert abs(ref) > 0.1
    assert abs(new - ref) < 1e-11 * max(1.0, abs(ref)), (new, ref)
    assert np.abs(new_d - ref_d).max() < 1e-11 * np.abs(ref_d).max()
    # without the core densities too
    ref_nc = MGGA.calculate_paw_correction(xc, setup, D_sp, None, addcoredensity=False)
    new_nc = paw_correction(xc, xc.kernel, setup, D_sp, None, addcoredensity=False)
    assert abs(new_nc - ref_nc) < 1e-11 * max(1.0, abs(ref_nc))


def test_radial_variables_are_gpaws():
    """n, sigma and tau of every direction are the values GPAW's radial
    machinery hands its kernel (recorded through a kernel that stores them)."""
    rng = np.random.default_rng(4)
    setup = create_setup("O", XC("PBE"))
    D_sp = _density_matrix(setup, 2, rng)
    xc = CiderXC(paw_features="local")
    seen = []

    class Recorder:
        type = "MGGA"
        name = "recorder"

        def calculate(self, e_g, n_sg, dedn_sg, sigma_xg, dedsigma_xg, tau_sg, dedtau_sg):
            seen.append((n_sg.copy(), sigma_xg.copy(), tau_sg.copy()))
            e_g[:] = 0.0
            dedsigma_xg[:] = 0.0
            dedtau_sg[:] = 0.0

    kernel = xc.kernel
    xc.kernel = Recorder()
    try:
        MGGA.calculate_paw_correction(xc, setup, D_sp, np.zeros_like(D_sp))
    finally:
        xc.kernel = kernel
    nn = len(seen) // 2
    for ae, block in ((True, seen[:nn]), (False, seen[nn:])):
        rv = RadialVariables(xc, setup.xc_correction, D_sp, ae)
        for n, (n_sg, sigma_xg, tau_sg) in enumerate(block):
            for mine, gpaws in ((rv.n_sng[:, n], n_sg), (rv.sigma_xng[:, n], sigma_xg),
                                (rv.tau_sng[:, n], tau_sg)):
                assert np.abs(mine - gpaws).max() <= 1e-13 * np.abs(gpaws).max()
    # channel inputs: exact spin scaling
    n, sig, tau = channel_inputs(rv.n_sng, rv.sigma_xng, rv.tau_sng, 1)
    assert np.array_equal(n, 2.0 * np.maximum(rv.n_sng[1], 0.0).ravel())
    assert np.array_equal(sig, 4.0 * np.maximum(rv.sigma_xng[2], 0.0).ravel())
