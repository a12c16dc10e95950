"""GPAW-side items of issue 22: hybrid semilocal parts refused, label over
frames of different symmetry, MTP .cfg output of periodic cells."""
import pytest

pytest.importorskip("gpaw")

from cider_xc.gpaw import parse_semilocal  # noqa: E402


@pytest.mark.parametrize("s", ["0.25*HF + 0.75*GGA_X_PBE, GGA_C_PBE", "HYB_GGA_XC_WB97X",
                               "hyb_gga_xc_pbeh"])
def test_gpaw_refuses_exact_exchange_in_semilocal_part(s):
    """GPAW's LibXC would evaluate only the DFT part of a hybrid libxc name."""
    with pytest.raises(ValueError, match="exact exchange"):
        parse_semilocal(s)
