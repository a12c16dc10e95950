"""PySCF plugin: ``mf.xc = cider_xc.load(...)`` on stock ``dft.RKS``/``UKS``.

Importing this package installs the assignment hook (see :mod:`.hook`).
"""
from . import hook
from .numint import CiderNumInt
from .dfaux import DensityProjector

hook.install()

__all__ = ["CiderNumInt", "DensityProjector", "hook"]
