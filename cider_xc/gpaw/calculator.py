"""Reading .gpw files written with CiderXC.

GPAW stores the XC object of a calculation as the plain dictionary of
``CiderXC.todict()`` (ASE's ulm format: JSON and arrays, no pickle).  GPAW's
own reader does not know CIDER (it fails with "Unknown functional: CIDER
(read this .gpw file with cider_xc.gpaw.restart)"); :func:`restart` reads such a file
with a calculator that rebuilds CiderXC from that dictionary and the shipped
model files.  Nothing in the file is executed.
"""
from __future__ import annotations

from gpaw.old.calculator import GPAW as _LegacyGPAW

from .xc import GPW_NAMES, CiderXC


class CiderGPAW(_LegacyGPAW):
    """GPAW's calculator (the path GPAW uses for XC objects) that also
    understands ``xc={'name': 'CIDER', ...}`` as read from a .gpw file."""

    def __init__(self, restart=None, *, functional=None, **kwargs):
        self._cider_functional = functional
        super().__init__(restart, **kwargs)

    def initialize(self, atoms=None, reading=False):
        xc = self.parameters.get("xc")
        if isinstance(xc, dict) and xc.get("name") in GPW_NAMES:
            self.parameters["xc"] = CiderXC.from_dict(xc, functional=self._cider_functional)
        return super().initialize(atoms, reading)


def restart(filename, functional=None, txt=None, **kwargs):
    """Read a .gpw file written with CiderXC: returns (atoms, calc).

    ``functional`` overrides the model recorded in the file (needed when the
    file was made with a model file that is not shipped)."""
    calc = CiderGPAW(filename, functional=functional, txt=txt, **kwargs)
    return calc.get_atoms(), calc
