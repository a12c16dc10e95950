"""Descriptor settings: which features, with which exponent parameters."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class DescriptorSettings:
    """Settings of the CIDER descriptors.

    The length-scale exponent of feature i at a point r is

        a_i(r) = m_i * pi * (n/2)^(2/3) * [A + B p + C (tau/tau_0 - 1)]

    (B = C = 0 ... GGA-free form; C = 0: GGA form; B = 0: meta-GGA form), and
    the nonlocal feature is the one-sided Gaussian integral

        G_i(r) = int n(r') exp(-a_i(r) |r - r'|^2) dr'.

    In the uniform electron gas G_i = 2 (m_i A)^(-3/2) for every density, so
    g_i = G_i (m_i A)^(3/2) / 2 equals 1 there.  The model inputs are

        x = [p/(1+p), (alpha-1)/(alpha+1), (g_1-1)/(g_1+1), ...]

    all inside a finite box and all exactly 0 in the uniform gas.

    Attributes
    ----------
    A, B, C : float
        Exponent parameters (A > C >= 0, B >= 0 keep a(r) > 0).
    multipliers : tuple of float
        Exponent multipliers m_i, one nonlocal feature each.
    alpha_eta : float
        Regularisation of the iso-orbital indicator,
        alpha = (tau - tau_W)/(tau_0 + alpha_eta tau_W) (0: the usual alpha).
        A positive value keeps the tau potential bounded in density tails and
        one-orbital regions (see :func:`iso_orbital_indicator`) and keeps
        every exact constraint.
    rho_cutoff : float
        Densities (of the closed-shell density 2 n_sigma) below this value
        contribute nothing; see DESIGN.md section 2 for why this does not
        break exact scaling beyond 1e-8 relative.
    """

    A: float = 1.0
    B: float = 0.0
    C: float = 0.5
    multipliers: tuple = (0.5, 1.0, 2.0)
    rho_cutoff: float = 1e-10
    alpha_eta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "multipliers",
                           tuple(float(m) for m in self.multipliers))
        for name in ("A", "B", "C", "rho_cutoff", "alpha_eta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"descriptor setting {name}={v!r} must be a finite number")
        if not self.A > 0:
            raise ValueError(f"descriptor setting A={self.A} must be > 0")
        if self.B < 0 or self.C < 0:
            raise ValueError("descriptor settings B and C must be >= 0")
        if not self.C < self.A:
            raise ValueError(
                f"descriptor settings need C < A (got A={self.A}, C={self.C}) "
                "so that the exponent a(r) stays positive")
        if len(self.multipliers) == 0:
            raise ValueError("at least one exponent multiplier is needed")
        if any(not (m > 0 and math.isfinite(m)) for m in self.multipliers):
            raise ValueError(f"exponent multipliers must be positive: {self.multipliers}")
        if not self.rho_cutoff >= 0:
            raise ValueError("rho_cutoff must be >= 0")
        if not self.alpha_eta >= 0:
            raise ValueError(f"alpha_eta={self.alpha_eta} must be >= 0")

    @property
    def n_nonlocal(self) -> int:
        return len(self.multipliers)

    @property
    def n_features(self) -> int:
        """Number of model inputs: p, alpha and one per nonlocal feature."""
        return 2 + self.n_nonlocal

    @property
    def feature_names(self) -> list:
        return ["x_p", "x_alpha"] + [f"x_g{i}" for i in range(self.n_nonlocal)]

    def uniform_gas_G(self) -> list:
        """Analytic G_i of the uniform electron gas (any density)."""
        return [2.0 * (m * self.A) ** -1.5 for m in self.multipliers]

    def todict(self) -> dict:
        d = dataclasses.asdict(self)
        d["multipliers"] = list(self.multipliers)
        return d

    @classmethod
    def fromdict(cls, d: dict) -> "DescriptorSettings":
        if not isinstance(d, dict):
            raise ValueError("descriptor settings must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown descriptor settings: {sorted(unknown)}")
        kw = dict(d)
        if "multipliers" in kw:
            m = kw["multipliers"]
            if not isinstance(m, Sequence):
                raise ValueError("multipliers must be a list of numbers")
            kw["multipliers"] = tuple(m)
        return cls(**kw)
