"""Model files: ``.npz`` arrays plus a JSON header; never pickle.

Layout of a model file (a NumPy ``.npz`` archive):

* ``header``: 0-d unicode array holding JSON::

      {"format": "cider-xc-model", "format_version": 1,
       "name": ..., "descriptor_settings": {...},
       "composition": {"cider_x": 0.25, "semilocal_xc": "0.75*GGA_X_PBE, GGA_C_PBE",
                       "trained_on": "exact_exchange"},
       "fx": {"kind": "polynomial"}, "provenance": {...},
       "checksum": "sha256:..."}

* F_x kind "polynomial": ``fx_exponents`` (n_terms, n_features) int64,
  ``fx_coefficients`` (n_terms,); kind "rbf" (the GP mean itself):
  ``fx_control_points`` (n_control, n_features), ``fx_weights`` (n_control,),
  ``"length_scale"`` in the header's ``fx`` entry
* optionally ``"bound": {"lower", "upper", "fmax"}`` in the header's ``fx``
  entry: the bounded output map of F_x (:class:`cider_xc.model.FxBound`);
  optionally ``"tail_gate": {"start", "end"}``: the switch of f_ML in
  density tails (:class:`cider_xc.model.TailGate`)
* optionally (trained models) the GP state for the uncertainty estimate:
  ``gp_control_points`` (n_control, n_features), ``gp_beta``, ``gp_cov``, with
  ``"gp": {"kernel": "rbf", "length_scale": ..., "amplitude": ...}`` in the header

The checksum is the SHA-256 of the canonical header JSON (without the
checksum) followed by the bytes of every array in name order.  Files are read
with ``allow_pickle=False``, so loading cannot run code.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "cider-xc-model"
FORMAT_VERSION = 1


class DataFileError(ValueError):
    """A data file (model, reference data) that cannot be used; names the file."""

    def __init__(self, path, problem):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


class ModelFileError(DataFileError):
    """A model file that is missing, truncated, foreign or inconsistent."""


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the
    block succeeds, remove it when it fails, so a good file is never replaced
    by a partial one."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _checksum(header, arrays):
    h = hashlib.sha256()
    hdr = {k: v for k, v in header.items() if k != "checksum"}
    h.update(json.dumps(hdr, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def save_functional(path, functional, provenance=None, overwrite=False):
    """Write ``functional`` to ``path`` atomically (temporary file + rename)."""
    from .model import CiderFunctional
    if not isinstance(functional, CiderFunctional):
        raise TypeError("save_functional needs a CiderFunctional")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": functional.name,
        "descriptor_settings": functional.settings.todict(),
        "composition": {
            "cider_x": functional.cider_x,
            "semilocal_xc": functional.semilocal_xc,
            "trained_on": functional.header.get("composition", {}).get("trained_on"),
        },
        "fx": {"kind": functional.fx.kind},
        "provenance": provenance if provenance is not None
        else functional.header.get("provenance", {}),
    }
    if functional.bound is not None:
        header["fx"]["bound"] = functional.bound.todict()
    if functional.gate is not None:
        header["fx"]["tail_gate"] = functional.gate.todict()
    if functional.fx.kind == "rbf":
        header["fx"]["length_scale"] = functional.fx.length_scale
        arrays = {"fx_control_points": functional.fx.control_points,
                  "fx_weights": functional.fx.weights}
    else:
        arrays = {"fx_exponents": functional.fx.exponents.astype(np.int64),
                  "fx_coefficients": functional.fx.coefficients.astype(np.float64)}
    if "domain" in functional.header:
        header["domain"] = functional.header["domain"]
    if functional.gp is not None:
        header["gp"] = {"kernel": "rbf", "length_scale": float(functional.gp["length_scale"]),
                        "amplitude": float(functional.gp["amplitude"])}
        arrays["gp_control_points"] = np.asarray(functional.gp["control_points"], float)
        arrays["gp_beta"] = np.asarray(functional.gp["beta"], float)
        arrays["gp_cov"] = np.asarray(functional.gp["cov"], float)
    header["checksum"] = _checksum(header, arrays)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
    return path


def _check_zip(path):
    """Refuse a file that is not a zip archive before NumPy sees it: np.load
    falls back to unpickling anything that is neither a zip nor a .npy file,
    and with allow_pickle=False it then reports any random or text file as
    "pickled data"."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        return
    if not head:
        what = "the file is empty"
    elif head.startswith(b"PK"):
        what = "it starts like one but is truncated or damaged"
    elif head.startswith(b"\x93NUMPY"):
        what = "it is a single .npy array"
    elif head[:1] == b"\x80":
        what = "it looks like a Python pickle, which is refused (model files hold plain arrays only)"
    else:
        what = f"it does not start with the zip signature (first bytes {head[:4]!r})"
    raise ModelFileError(path, f"not a model file: not a valid .npz (zip) archive; {what}")


def read_functional(path):
    """Read and validate a model file; returns a :class:`CiderFunctional`."""
    from .descriptors import DescriptorSettings
    from .model import CiderFunctional, FxBound, PolynomialFx, TailGate
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(path, "no such model file")
    _check_zip(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelFileError(path, "contains pickled objects, which are refused "
                                       "(model files hold plain arrays only)") from None
        raise ModelFileError(path, f"not a readable .npz archive ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(path, f"not a readable .npz archive, possibly truncated ({exc})") from None
    if "header" not in arrays:
        raise ModelFileError(path, "has no 'header' entry: not a cider-xc model file")
    try:
        header = json.loads(str(arrays.pop("header")[()]))
    except (json.JSONDecodeError, TypeError, IndexError) as exc:
        raise ModelFileError(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(path, f"header does not declare format {FORMAT!r}: "
                                   "not a cider-xc model file")
    ver = header.get("format_version")
    if ver != FORMAT_VERSION:
        raise ModelFileError(path, f"format version {ver!r} is not supported "
                                   f"(this cider-xc reads version {FORMAT_VERSION})")
    if header.get("checksum") != _checksum(header, arrays):
        raise ModelFileError(path, "checksum mismatch: the file is corrupt or was edited")
    fxh = header.get("fx", {})
    if fxh.get("kind") not in ("polynomial", "rbf"):
        raise ModelFileError(path, f"unknown enhancement-factor kind {fxh.get('kind')!r}")
    try:
        settings = DescriptorSettings.fromdict(header["descriptor_settings"])
        if fxh["kind"] == "rbf":
            from .model import RBFFx
            fx = RBFFx(arrays["fx_control_points"], arrays["fx_weights"], fxh["length_scale"])
        else:
            fx = PolynomialFx(arrays["fx_exponents"], arrays["fx_coefficients"])
        comp = header.get("composition", {})
        gp = None
        if "gp" in header:
            gp = {"control_points": arrays["gp_control_points"], "beta": arrays["gp_beta"],
                  "cov": arrays["gp_cov"], "length_scale": header["gp"]["length_scale"],
                  "amplitude": header["gp"]["amplitude"]}
        return CiderFunctional(settings, fx, cider_x=comp.get("cider_x", 1.0),
                               semilocal_xc=comp.get("semilocal_xc"),
                               name=header.get("name", os.path.basename(path)),
                               header=header, gp=gp,
                               bound=FxBound.fromdict(fxh["bound"]) if "bound" in fxh else None,
                               gate=(TailGate.fromdict(fxh["tail_gate"]) if "tail_gate" in fxh
                                     else None))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(path, f"inconsistent model: {exc}") from None
