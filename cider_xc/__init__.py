"""cider-xc: machine-learned CIDER exchange functionals for PySCF and GPAW.

>>> import cider_xc
>>> mf.xc = cider_xc.load()          # the shipped default functional
"""
from __future__ import annotations

import os

from .io import ModelFileError, read_functional, save_functional
from .model import CiderFunctional, PolynomialFx

__version__ = "0.1.0"

#: The functional ``load()`` returns when no name is given: the trained PBE0
#: surrogate (data/training/pbe0-surrogate.toml reproduces it).
DEFAULT_FUNCTIONAL = "cider-pbe0"


def functionals_dir():
    """Directory holding the shipped model files."""
    from importlib import resources
    return str(resources.files("cider_xc.data").joinpath("functionals"))


def available():
    """Names of the shipped functionals."""
    d = functionals_dir()
    return sorted(f[:-4] for f in os.listdir(d) if f.endswith(".npz"))


def load_model(name=None, *, exchange_only=False, cider_x=None, semilocal_xc=None):
    """Read a CIDER functional from a model file, touching no other package.

    The same as :func:`load` without installing the PySCF hook: what the
    GPAW plugin uses (``CiderXC``), so that a GPAW-only run neither imports
    PySCF nor changes its classes.  Parameters as for :func:`load`.
    """
    if name is None:
        name = DEFAULT_FUNCTIONAL
    name = os.fspath(name)
    if os.path.sep in name or name.endswith(".npz") or os.path.exists(name):
        path = name
    else:
        path = os.path.join(functionals_dir(), name + ".npz")
        if not os.path.exists(path):
            raise ValueError(f"unknown functional {name!r}; shipped: {available()} "
                             "(or give the path of a model file)")
    fn = read_functional(path)
    return fn.with_composition(exchange_only=exchange_only, cider_x=cider_x,
                               semilocal_xc=semilocal_xc)


def load(name=None, *, exchange_only=False, cider_x=None, semilocal_xc=None):
    """Load a CIDER functional, ready for ``mf.xc = ...`` in PySCF.

    Parameters
    ----------
    name : str or path, optional
        A shipped name (see :func:`available`) or the path of a model file;
        None gives the shipped default.
    exchange_only : bool
        E_xc = E_x^CIDER alone (no correlation, no mixing).
    cider_x, semilocal_xc : optional
        Override the composition stored in the model file: the fraction of
        CIDER exchange and the remaining semilocal part (libxc string).

    Installs the PySCF hook (cider_xc.pyscf.hook) when PySCF is available;
    :func:`load_model` reads the same functional without it.
    """
    fn = load_model(name, exchange_only=exchange_only, cider_x=cider_x,
                    semilocal_xc=semilocal_xc)
    try:
        from .pyscf import hook
    except ImportError:  # PySCF not installed: the functional is still usable
        pass
    else:
        hook.install()
    return fn


__all__ = ["load", "load_model", "available", "CiderFunctional", "PolynomialFx", "ModelFileError",
           "read_functional", "save_functional", "DEFAULT_FUNCTIONAL"]
