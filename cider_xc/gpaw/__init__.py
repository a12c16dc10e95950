"""GPAW plugin: ``GPAW(mode=PW(ecut), xc=CiderXC(), ...)``.

GPAW is an optional dependency (``pip install cider-xc[gpaw]``)."""
try:
    import gpaw  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without GPAW
    raise ImportError("cider_xc.gpaw needs GPAW: pip install 'cider-xc[gpaw]' "
                      "(which builds GPAW against libxc; see the README)") from err

from .xc import CiderKernel, CiderXC, parse_semilocal
from .calculator import CiderGPAW, restart

__all__ = ["CiderXC", "CiderKernel", "CiderGPAW", "restart", "parse_semilocal"]
