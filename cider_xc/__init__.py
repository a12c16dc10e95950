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
        name = {n.lower(): n for n in available()}.get(name.lower(), name)
        path = os.path.join(functionals_dir(), name + ".npz")
        if not os.path.exists(path):
            raise ValueError(f"unknown functional {name!r}; shipped: {available()} "
                             "(or give the path of a model file)")
    fn = read_functional(path)
    fn.source = name if path != name else os.path.abspath(path)
    return fn.with_composition(exchange_only=exchange_only, cider_x=cider_x,
                               semilocal_xc=semilocal_xc)


def load(name=None, *, exchange_only=False, cider_x=None, semilocal_xc=None):
    """Load a CIDER functional, ready for ``mf.xc = ...`` in PySCF.

    Parameters
    ----------
    name : str or path, optional
        A shipped name (see :func:`available`; any case) or the path of a
        model file; None gives the shipped default.
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


class _PySCFHookFinder:
    """Installs the PySCF hook right after ``pyscf.dft`` is first imported, so
    that ``mf.xc = "cider-pbe0"`` works after a plain ``import cider_xc``
    without importing PySCF here (GPAW-only users do not pay for it)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "pyscf.dft":
            return None
        import importlib.machinery
        import sys
        if cls in sys.meta_path:
            sys.meta_path.remove(cls)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_orig = spec.loader.exec_module

        def exec_module(module):
            exec_orig(module)
            _install_pyscf_hook()
        spec.loader.exec_module = exec_module
        return spec


def _install_pyscf_hook():
    try:
        from .pyscf import hook
    except ImportError:      # PySCF not installed (or broken): nothing to hook
        return
    hook.install()


def _arrange_pyscf_hook():
    import sys
    if "pyscf.dft" in sys.modules:
        _install_pyscf_hook()
    elif _PySCFHookFinder not in sys.meta_path:
        sys.meta_path.insert(0, _PySCFHookFinder)


_arrange_pyscf_hook()

__all__ = ["load", "load_model", "available", "CiderFunctional", "PolynomialFx", "ModelFileError",
           "read_functional", "save_functional", "DEFAULT_FUNCTIONAL"]
