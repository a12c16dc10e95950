"""CIDER descriptors (installed as ``cider_xc.descriptors``).

Semilocal quantities (p, alpha), the density-dependent length-scale exponent
a(r), the nonlocal Gaussian-weighted density integrals G_i and the bounded
transforms that turn them into model inputs, with all derivatives.

This package imports neither PySCF nor GPAW: everything here works on plain
arrays in atomic units.
"""
from .settings import DescriptorSettings
from .semilocal import (
    exponent, exponent_derivs, lda_exchange, pbe_enhancement, reduced_gradient,
    iso_orbital_indicator,
)
from .features import FeatureChain

__all__ = [
    "DescriptorSettings", "FeatureChain", "exponent", "exponent_derivs",
    "lda_exchange", "pbe_enhancement", "reduced_gradient",
    "iso_orbital_indicator",
]
