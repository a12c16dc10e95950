"""The one hook that makes ``mf.xc = cider_xc.load(...)`` work.

PySCF's Kohn-Sham classes keep ``xc`` as a plain attribute and evaluate it
through ``mf._numint``.  :func:`install` puts two small data descriptors on
``pyscf.dft.rks.KohnShamDFT`` (the base of RKS, UKS, ROKS and their
density-fitted variants):

* ``xc``: stores the value in the instance dict exactly as before; a string
  that names a CIDER functional (:func:`cider_from_string`: a shipped name in
  any case, a model path, or the ``str(fn)`` form) is loaded first; for a
  :class:`~cider_xc.model.CiderFunctional` it checks that the method is
  supported (molecular RKS/UKS/ROKS, also spin-free X2C and symmetry-adapted;
  not pyscf.pbc, GKS or two-component X2C).
* ``_numint``: returns the stored NumInt, except that while ``xc`` holds a
  CIDER functional it returns (and stores) a
  :class:`~cider_xc.pyscf.numint.CiderNumInt` wrapping the stock one, and
  when ``xc`` is a string again it returns the stock NumInt unchanged.

The first assignment of a CIDER functional also wraps ``get_veff`` and
``extra_force`` of PySCF's KS gradient classes (:mod:`.grad`); the wrappers
call the original methods unchanged unless ``mf.xc`` is a CIDER functional.

``dump_chk`` also writes ``scf/xc`` = ``str(mf.xc)`` for a CIDER
functional (nothing more for string functionals).

With a string ``xc`` nothing else changes: PySCF runs its own code on its
own NumInt object, so energies are bit-identical to a run without cider-xc.
``uninstall()`` removes both descriptors.
"""
from __future__ import annotations

import os
import re

from ..model import CiderFunctional, check_semilocal_xc


class _XcAttribute:
    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        try:
            return obj.__dict__["xc"]
        except KeyError:
            raise AttributeError("xc") from None

    def __set__(self, obj, value):
        if isinstance(value, (str, bytes)):
            # strings naming a CIDER functional (bytes: as h5py returns a string
            # saved in a chkfile); any other value is stored unchanged
            value = cider_from_string(value)
        if isinstance(value, CiderFunctional):
            check_supported(obj)
            from . import grad
            grad.install()      # nuclear gradients (see cider_xc.pyscf.grad)
        obj.__dict__["xc"] = value

    def __delete__(self, obj):
        del obj.__dict__["xc"]


class _NumIntAttribute:
    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        from .numint import CiderNumInt
        d = obj.__dict__
        try:
            ni = d["_numint"]
        except KeyError:
            raise AttributeError("_numint") from None
        xc = d.get("xc")
        if isinstance(xc, CiderFunctional):
            if not (isinstance(ni, CiderNumInt) and ni.functional is xc):
                if isinstance(ni, CiderNumInt):
                    ni = CiderNumInt(xc, ni._stock, ni._cache)
                else:
                    ni = CiderNumInt(xc, ni)
                d["_numint"] = ni
        elif isinstance(ni, CiderNumInt):
            ni = ni._stock
            d["_numint"] = ni
        return ni

    def __set__(self, obj, value):
        obj.__dict__["_numint"] = value

    def __delete__(self, obj):
        del obj.__dict__["_numint"]


#: ``mf.xc`` strings meaning the shipped default (as in cider_xc.ase)
DEFAULT_ALIASES = ("cider",)

_XC_STRING = re.compile(r"^\s*([0-9.eE+-]+)\s*\*\s*CIDER_X\[(.+)\]\s*(?:\+\s*(.*?))?\s*$",
                        re.IGNORECASE)


def cider_from_string(xc):
    """The CIDER functional a PySCF ``xc`` string names, or the string itself.

    CIDER strings (case-insensitive): a shipped name ("cider-pbe0"), "cider"
    (the shipped default), the path of a model file (ending in .npz, or an
    existing file path containing a directory separator), and the form
    ``str(fn)`` writes, "0.25*CIDER_X[cider-pbe0] + 0.75*GGA_X_PBE, GGA_C_PBE"
    (any shipped name or model path in the brackets).  Every other string is
    returned unchanged, so PySCF's own functionals behave exactly as before.
    """
    import cider_xc
    if isinstance(xc, bytes):
        try:
            s = xc.decode()
        except UnicodeDecodeError:
            return xc
        out = cider_from_string(s)
        return out if isinstance(out, CiderFunctional) else xc
    s = xc.strip()
    low = s.lower()
    if low in DEFAULT_ALIASES:
        return cider_xc.load()
    if low in {n.lower() for n in cider_xc.available()}:
        return cider_xc.load(s)
    if low.endswith(".npz") or (os.sep in s and os.path.isfile(s)):
        return cider_xc.load(s)
    m = _XC_STRING.match(s)
    if m is not None:
        base = cider_xc.load(m.group(2).strip())
        sl = m.group(3) or None
        if sl is not None:
            check_semilocal_xc(sl)
        return CiderFunctional(base.settings, base.fx, float(m.group(1)), sl, base.name,
                               base.header, base.gp, bound=base.bound, gate=base.gate,
                               source=base.source)
    return xc


def check_supported(mf):
    """Raise a clear error for methods a CIDER functional cannot serve."""
    mro = type(mf).__mro__
    if any(c.__module__.startswith("pyscf.pbc") for c in mro):
        raise NotImplementedError(
            "cider_xc: periodic pyscf.pbc calculations are not supported; use "
            "cider_xc.gpaw (GPAW plane waves) for solids")
    from pyscf.dft import rks, rks_symm, roks, uks, uks_symm
    if any(c.__module__.startswith("pyscf.x2c.") and c.__module__ != "pyscf.x2c.sfx2c1e"
           for c in mro) and not isinstance(mf, (rks.RKS, uks.UKS, roks.ROKS)):
        raise NotImplementedError(
            f"cider_xc: {type(mf).__module__}.{type(mf).__name__} is two-component "
            "(spinor) X2C Kohn-Sham, whose XC part acts on spinor densities; CIDER "
            "functionals need collinear spin densities. For scalar-relativistic X2C "
            "use dft.RKS/UKS(mol).x2c() (spin-free X2C: only the core Hamiltonian "
            "changes; supported)")
    names = {c.__name__ for c in mro}
    supported = (rks.RKS, uks.UKS, roks.ROKS, rks_symm.SymAdaptedRKS,
                 rks_symm.SymAdaptedROKS, uks_symm.SymAdaptedUKS)
    if names & {"GKS", "DKS", "UDKS", "RDKS", "DHF", "GHF"} or not isinstance(mf, supported):
        raise NotImplementedError(
            f"cider_xc: {type(mf).__name__} is not supported; CIDER functionals "
            "work with molecular dft.RKS, dft.UKS and dft.ROKS (optionally "
            ".density_fit(), spin-free .x2c(), mol.symmetry=True)")


def _wrap_density_fit(orig):
    """PySCF's density_fit picks the auxiliary basis from ``mf.xc`` through
    libxc's string parser, which cannot read a CIDER functional.  The CIDER
    part has no exact exchange, so a CIDER functional gets the basis PySCF
    picks for its semilocal part when that is a hybrid, and for a pure
    (non-hybrid) functional otherwise."""
    def density_fit(mf, auxbasis=None, with_df=None, only_dfj=False):
        xc = getattr(mf, "__dict__", {}).get("xc")
        if (isinstance(xc, CiderFunctional) and auxbasis is None and with_df is None
                and isinstance(mf.mol.basis, str)):
            from pyscf.df.addons import predefined_auxbasis
            from pyscf.dft import libxc
            sl = xc.semilocal_xc
            like = sl if sl and libxc.is_hybrid_xc(sl) else "PBE"
            auxbasis = predefined_auxbasis(mf.mol, mf.mol.basis, like)
        return orig(mf, auxbasis, with_df, only_dfj)
    density_fit._cider_orig = orig
    density_fit.__doc__ = orig.__doc__
    return density_fit


def _dump_chk(mf, envs_or_file):
    """PySCF's dump_chk, plus ``scf/xc`` = ``str(mf.xc)`` when ``mf.xc`` is a
    CIDER functional, so that ``mf.xc = lib.chkfile.load(chk, "scf/xc")``
    restores it (string functionals: PySCF's dump_chk alone, unchanged)."""
    from pyscf.dft import rks
    out = super(rks.KohnShamDFT, mf).dump_chk(envs_or_file)
    xc = mf.__dict__.get("xc")
    if isinstance(xc, CiderFunctional):
        path = envs_or_file if isinstance(envs_or_file, str) else mf.chkfile
        if path:
            from pyscf.lib import chkfile
            chkfile.dump(path, "scf/xc", xc.xc_string())
    return out


def _kohn_sham_methods():
    """Methods put on KohnShamDFT: the post-SCF domain check and the
    semilocal start (each calls PySCF's own method through super())."""
    from . import domain, start
    return {"_finalize": domain._finalize, "get_init_guess": start.get_init_guess}


def install():
    """Install the descriptors (idempotent)."""
    from pyscf.df import df_jk
    from pyscf.dft import rks
    cls = rks.KohnShamDFT
    if not isinstance(cls.__dict__.get("xc"), _XcAttribute):
        cls.xc = _XcAttribute()
    if not isinstance(cls.__dict__.get("_numint"), _NumIntAttribute):
        cls._numint = _NumIntAttribute()
    if cls.__dict__.get("dump_chk") is not _dump_chk:
        cls.dump_chk = _dump_chk
    if not hasattr(df_jk.density_fit, "_cider_orig"):
        df_jk.density_fit = _wrap_density_fit(df_jk.density_fit)
    # one out-of-domain warning after a CIDER SCF; a CIDER SCF starts from
    # its PBE analogue's density
    for name, method in _kohn_sham_methods().items():
        if cls.__dict__.get(name) is not method:
            setattr(cls, name, method)
    # an isolated atom gets an unpruned angular grid (cider_xc.pyscf.atomgrid)
    if not hasattr(cls.__dict__["initialize_grids"], "_cider_orig"):
        from . import atomgrid
        cls.initialize_grids = atomgrid.wrap_initialize_grids(cls.__dict__["initialize_grids"])


def uninstall():
    from pyscf.df import df_jk
    from pyscf.dft import rks
    from . import grad
    grad.uninstall()
    if hasattr(df_jk.density_fit, "_cider_orig"):
        df_jk.density_fit = df_jk.density_fit._cider_orig
    cls = rks.KohnShamDFT
    for name, kind in (("xc", _XcAttribute), ("_numint", _NumIntAttribute)):
        if isinstance(cls.__dict__.get(name), kind):
            delattr(cls, name)
    if cls.__dict__.get("dump_chk") is _dump_chk:
        del cls.dump_chk
    for name, method in _kohn_sham_methods().items():
        if cls.__dict__.get(name) is method:
            delattr(cls, name)
    if hasattr(cls.__dict__["initialize_grids"], "_cider_orig"):
        cls.initialize_grids = cls.__dict__["initialize_grids"]._cider_orig


def installed():
    from pyscf.dft import rks
    return isinstance(rks.KohnShamDFT.__dict__.get("xc"), _XcAttribute)
