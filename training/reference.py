"""Hybrid-functional reference data, one HDF5 file per system.

For every system: a hybrid SCF (PBE0 by default) with PySCF, checked by
PySCF's internal stability analysis and re-converged from lower orbitals
while it is unstable (PySCF's default guess can land in an excited state:
the Mn atom 32 kcal/mol above its ground state), then on its converged
orbitals the total energy, the exact (Hartree-Fock) exchange energy,
the PBE exchange energy, optionally orbital eigenvalues, and the per-point
descriptor data of every spin channel (see
:func:`cider_xc.pyscf.features.spin_channel_features`).

Files are written atomically (temporary file, then rename); an index
(``index.json``) records every system as ``done`` or ``failed`` with the
reason; a rerun skips finished systems and retries failed ones.  Files
made before the stability check are checked on a rerun: the SCF is repeated,
and the system recomputed only where it was unstable.  Systems run
in parallel processes with joblib, or on a Dask cluster when a scheduler
address is given (joblib's dask backend).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback

import numpy as np

from cider_xc.io import DataFileError, atomic_path

DATA_FORMAT = "cider-xc-reference"
DATA_VERSION = 1


class ReferenceDataError(DataFileError):
    """A reference-data file that is missing, truncated, foreign or stale."""


@dataclasses.dataclass
class ReferenceSettings:
    xc: str = "PBE0"
    basis: str = "def2-tzvp"
    grid_level: int = 3
    density_fit: bool = True
    conv_tol: float = 1e-9
    max_cycle: int = 100
    eigenvalues: bool = True
    min_weight: float = 1e-12
    #: rounds of internal stability analysis after the SCF (0: none): an
    #: unstable solution is re-converged from the lower orbitals PySCF's
    #: stability analysis finds (the Mn atom from PySCF's default guess lands
    #: in an excited PBE0 state 32 kcal/mol above the ground state)
    stability_rounds: int = 3

    def __post_init__(self):
        if (isinstance(self.stability_rounds, bool) or not isinstance(self.stability_rounds, int)
                or self.stability_rounds < 0):
            raise ValueError("reference settings: stability_rounds must be an integer >= 0, "
                             f"got {self.stability_rounds!r}")

    def todict(self):
        return dataclasses.asdict(self)


class UnstableReferenceError(RuntimeError):
    """The reference SCF stays unstable after every allowed stability round."""


#: a restart from the stability analysis must lower the energy by more than
#: this (Hartree) to be taken: open-shell 3d atoms report directions whose
#: restarts land 1e-7..1e-5 Ha *higher* (near-degenerate states, grid noise)
STABILITY_MIN_LOWERING = 1e-6


def _scf_state(mf):
    return (mf.mo_coeff, mf.mo_occ, mf.mo_energy, mf.e_tot, mf.converged)


def _set_scf_state(mf, state):
    mf.mo_coeff, mf.mo_occ, mf.mo_energy, mf.e_tot, mf.converged = state


def stabilise(mf, rounds):
    """Internal stability analysis of a converged SCF: while PySCF finds an
    unstable direction (``mf.stability()``), re-converge from the orbitals
    it returns, at most ``rounds`` times, and keep a restart only if it
    converges lower by more than :data:`STABILITY_MIN_LOWERING` (otherwise
    the solution before it is kept and the search ends).  Returns a record
    {"rounds": restarts taken, "lowered_by": Hartree, "stable": the last
    analysis' verdict, "note"}; raises :class:`UnstableReferenceError` if
    every round lowered the energy and the solution is still unstable."""
    e0 = float(mf.e_tot)
    n = 0
    while True:
        mo, _, stable, _ = mf.stability(return_status=True)
        if stable:
            return {"rounds": n, "lowered_by": e0 - float(mf.e_tot), "stable": True,
                    "note": ""}
        if n == rounds:
            raise UnstableReferenceError(
                f"{mf.xc} solution still unstable after {rounds} stability rounds, each "
                f"lower (E = {float(mf.e_tot):.8f}, {e0 - float(mf.e_tot):.6f} Ha below "
                "the first solution)")
        best = _scf_state(mf)
        mf.kernel(dm0=mf.make_rdm1(mo, mf.mo_occ))
        if not mf.converged or float(mf.e_tot) > best[3] - STABILITY_MIN_LOWERING:
            why = ("did not converge" if not mf.converged else
                   f"converged at {float(mf.e_tot) - best[3]:+.2e} Ha")
            _set_scf_state(mf, best)
            return {"rounds": n, "lowered_by": e0 - float(mf.e_tot), "stable": False,
                    "note": f"restart {n + 1} along the unstable direction {why}; "
                            "the solution before it is kept"}
        n += 1


def reference_scf(system, ref=ReferenceSettings()):
    """The converged, stability-checked hybrid SCF of one system: (mf, record)."""
    from pyscf import dft
    mol = system.to_mol(ref.basis)
    mf = (dft.UKS if mol.spin != 0 else dft.RKS)(mol)
    if ref.density_fit:
        mf = mf.density_fit()
    mf.xc = ref.xc
    mf.grids.level = ref.grid_level
    mf.conv_tol = ref.conv_tol
    mf.max_cycle = ref.max_cycle
    t0 = time.perf_counter()
    mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"{ref.xc} SCF did not converge in {ref.max_cycle} cycles")
    record = {"rounds": 0, "lowered_by": 0.0, "stable": None, "note": "not checked"}
    if ref.stability_rounds > 0:
        record = stabilise(mf, ref.stability_rounds)
    record["scf_seconds"] = time.perf_counter() - t0
    return mf, record


def compute(system, descriptor_settings, ref=ReferenceSettings(), scf=None):
    """Run one system; returns (attrs dict, arrays dict).  ``scf``: the
    result of :func:`reference_scf` when the caller has it already."""
    from pyscf import scf as pyscf_scf

    from cider_xc.pyscf.features import spin_channel_features
    mf, record = reference_scf(system, ref) if scf is None else scf
    t0 = time.perf_counter() - record["scf_seconds"]     # the SCF counts in "seconds"
    mol = mf.mol
    unrestricted = mol.spin != 0
    e_tot = mf.e_tot
    dm = np.asarray(mf.make_rdm1())
    # exact exchange of the converged orbitals, with exact (not fitted) integrals
    if unrestricted:
        vk = pyscf_scf.hf.get_jk(mol, dm, hermi=1, with_j=False)[1]
        exx = -0.5 * float(np.einsum("sij,sji->", dm, vk))
    else:
        vk = pyscf_scf.hf.get_jk(mol, dm, hermi=1, with_j=False)[1]
        exx = -0.25 * float(np.einsum("ij,ji->", dm, vk))
    chans = spin_channel_features(mol, mf.grids, dm, descriptor_settings,
                                  min_weight=ref.min_weight)
    ex_pbe = float(sum(np.dot(c["we"], c["fpbe"]) for c in chans))
    attrs = {
        "format": DATA_FORMAT, "format_version": DATA_VERSION,
        "name": system.name, "source": system.source,
        "symbols": json.dumps(list(system.symbols)),
        "positions_angstrom": json.dumps(np.asarray(system.positions).tolist()),
        "charge": system.charge, "spin": system.spin, "nspin": len(chans),
        "e_tot": float(e_tot), "exx": exx, "ex_pbe": ex_pbe,
        "reference": json.dumps(ref.todict()),
        "stability": json.dumps(record),
        "descriptor_settings": json.dumps(descriptor_settings.todict()),
        "seconds": time.perf_counter() - t0,
    }
    arrays = {}
    for s, c in enumerate(chans):
        for k in ("x", "we", "fpbe", "rho"):
            arrays[f"spin{s}/{k}"] = c[k]
    if ref.eigenvalues:
        arrays["mo_energy"] = np.asarray(mf.mo_energy)
        arrays["mo_occ"] = np.asarray(mf.mo_occ)
    return attrs, arrays


def write_h5(path, attrs, arrays):
    """Atomic HDF5 write: temporary file in the same directory, then rename."""
    import h5py
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def read_h5(path):
    """Read one reference file; clear errors for truncated or foreign files."""
    import h5py
    if not os.path.isfile(path):
        raise ReferenceDataError(path, "no such reference-data file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            if attrs.get("format") != DATA_FORMAT:
                raise ReferenceDataError(path, "not a cider-xc reference-data file")
            if attrs.get("format_version") != DATA_VERSION:
                raise ReferenceDataError(path, f"unsupported format version "
                                               f"{attrs.get('format_version')!r}")
            arrays = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.dtype.kind == "O":
                        raise ReferenceDataError(path, f"dataset {name} holds objects")
                    arrays[name] = obj[()]
            f.visititems(visit)
    except ReferenceDataError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ReferenceDataError(path, f"unreadable or truncated HDF5 file ({exc})") from None
    for k in ("symbols", "positions_angstrom", "reference", "descriptor_settings"):
        if isinstance(attrs.get(k), bytes):
            attrs[k] = attrs[k].decode()
    return attrs, arrays


def _inverse_ratio_map(r):
    """y with descriptors.features.ratio_map(y) = r."""
    r = np.asarray(r, dtype=float)
    return np.where(r >= -1.0, (1.0 + r) / np.maximum(1.0 - r, 1e-300), (r + 1.0) / (r + 3.0))


def convert_alpha_eta(x, eta_old, eta_new):
    """Model inputs x (n_features, N) of one channel recomputed for another
    alpha regularisation, exactly.

    alpha_eta = (tau - tau_W)/(tau_0 + eta tau_W) and tau_W/tau_0 = 5p/3 in
    every channel, so alpha_new = alpha_old (1 + eta_old q)/(1 + eta_new q)
    with q = 5p/3 = (5/3) x_p/(1 - x_p): the stored x_p and x_alpha hold all
    that is needed (written with the factor's numerator and denominator
    multiplied by 1 - x_p, which stays finite where x_p rounds to 1)."""
    from cider_xc.descriptors.features import ratio_map
    x = np.array(x, dtype=float, copy=True)
    xp = x[0]
    one = 1.0 - xp
    factor = (one + eta_old * 5.0 / 3.0 * xp) / (one + eta_new * 5.0 / 3.0 * xp)
    x[1] = ratio_map(_inverse_ratio_map(x[1]) * factor)[0]
    return x


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


def _only_alpha_eta_differs(old, new):
    return _without(old, "alpha_eta") == _without(new, "alpha_eta")


def convert_file(path, settings_dict):
    """Rewrite one reference file for descriptor settings that differ from
    its own only in alpha_eta (exact, no SCF; see :func:`convert_alpha_eta`)."""
    attrs, arrays = read_h5(path)
    old = json.loads(attrs["descriptor_settings"])
    if not _only_alpha_eta_differs(old, settings_dict):
        raise ReferenceDataError(path, "descriptor settings differ in more than alpha_eta")
    e_old, e_new = float(old.get("alpha_eta", 0.0)), float(settings_dict.get("alpha_eta", 0.0))
    for k in list(arrays):
        if k.endswith("/x"):
            arrays[k] = convert_alpha_eta(arrays[k], e_old, e_new)
    attrs["descriptor_settings"] = json.dumps(settings_dict)
    write_h5(path, attrs, arrays)


def _filename(name):
    safe = "".join(ch if ch.isalnum() or ch in "-_+." else "_" for ch in name)
    return safe + ".h5"


#: a file made before the stability check whose rerun SCF is stable and gives
#: its stored energy to within this (Hartree) keeps its data
UPGRADE_ENERGY_TOL = 1e-6


def _run_one(system, settings_dict, ref_dict, out_dir, upgrade=False):
    """Worker: compute and write one system; never raises, returns a status.

    ``upgrade``: the system's file was made with the same settings before
    the stability check existed.  The SCF is rerun with the check; if it
    needs no restart and lands on the stored energy, only the file's
    settings are rewritten (the data are those of a stable solution),
    otherwise the system is computed again from the stable solution."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cider_xc.descriptors import DescriptorSettings
    path = os.path.join(out_dir, _filename(system.name))
    ref = ReferenceSettings(**ref_dict)
    try:
        scf = None
        if upgrade:
            t0 = time.perf_counter()
            attrs, arrays = read_h5(path)
            scf = reference_scf(system, ref)
            mf, record = scf
            if record["rounds"] == 0 and abs(float(mf.e_tot) - float(attrs["e_tot"])) \
                    < UPGRADE_ENERGY_TOL:
                attrs["reference"] = json.dumps(ref_dict)
                attrs["stability"] = json.dumps(record)
                write_h5(path, attrs, arrays)
                return {"name": system.name, "status": "done", "file": os.path.basename(path),
                        "seconds": float(attrs["seconds"]), "upgrade": "stable",
                        "upgrade_seconds": time.perf_counter() - t0}
        attrs, arrays = compute(system, DescriptorSettings.fromdict(settings_dict), ref, scf=scf)
        write_h5(path, attrs, arrays)
        out = {"name": system.name, "status": "done", "file": os.path.basename(path),
               "seconds": attrs["seconds"]}
        if upgrade:
            out["upgrade"] = "recomputed"
        rec = json.loads(attrs["stability"])
        if rec["rounds"]:
            out["stability"] = rec
        return out
    except Exception as exc:  # reported, never dropped
        return {"name": system.name, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=3)}


def load_index(out_dir):
    p = os.path.join(out_dir, "index.json")
    if not os.path.exists(p):
        return {}
    try:
        with open(p) as fh:
            return json.load(fh)["systems"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ReferenceDataError(p, f"corrupt index ({exc})") from None


def _write_index(out_dir, entries, settings_dict, ref_dict):
    p = os.path.join(out_dir, "index.json")
    with atomic_path(p, ".json") as tmp, open(tmp, "w") as fh:
        json.dump({"format": DATA_FORMAT, "descriptor_settings": settings_dict,
                   "reference": ref_dict, "systems": entries}, fh, indent=1)


def generate(systems, out_dir, descriptor_settings, ref=ReferenceSettings(), n_jobs=1,
             scheduler=None, progress=True):
    """Compute reference data for ``systems`` into ``out_dir``.

    Finished systems (status ``done`` with a readable file computed with the same
    settings) are skipped; failures are recorded with their reason in
    ``index.json`` and returned.  ``scheduler``: a Dask scheduler address (or a
    ``distributed.Client``) to run on a cluster.  Returns the index entries.
    """
    import joblib
    os.makedirs(out_dir, exist_ok=True)
    settings_dict = descriptor_settings.todict()
    ref_dict = ref.todict()
    index = load_index(out_dir)
    todo = []
    upgrade = set()
    n_converted = 0
    for s in systems:
        e = index.get(s.name)
        if e and e.get("status") == "done":
            try:
                path = os.path.join(out_dir, e["file"])
                attrs, _ = read_h5(path)
                old = json.loads(attrs["descriptor_settings"])
                old_ref = json.loads(attrs["reference"])
                if old_ref == ref_dict:
                    if old == settings_dict:
                        continue
                    if _only_alpha_eta_differs(old, settings_dict):
                        # an exact transform of the stored features: no SCF
                        convert_file(path, settings_dict)
                        n_converted += 1
                        continue
                elif ("stability_rounds" not in old_ref and ref.stability_rounds > 0
                      and old_ref == _without(ref_dict, "stability_rounds") and old == settings_dict):
                    # made before the stability check: check it now
                    upgrade.add(s.name)
            except ReferenceDataError:
                pass
        todo.append(s)
    if n_converted and progress:
        print(f"reference data: {n_converted} files converted to alpha_eta = "
              f"{settings_dict.get('alpha_eta', 0.0)} (exact, no SCF)")
    results = []
    if todo:
        if upgrade and progress:
            print(f"reference data: {len(upgrade)} files made before the stability check "
                  "are checked (rerun SCF; recomputed only where unstable)")
        jobs = (joblib.delayed(_run_one)(s, settings_dict, ref_dict, out_dir, s.name in upgrade)
                for s in todo)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="reference data", unit="system")
        client = None
        if scheduler is not None:
            from dask.distributed import Client
            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            backend = joblib.parallel_backend("dask")
        else:
            backend = joblib.parallel_backend("loky", n_jobs=n_jobs)
        try:
            with backend:
                par = joblib.Parallel(n_jobs=n_jobs if scheduler is None else -1,
                                      return_as="generator_unordered")
                for r in par(jobs):
                    results.append(r)
                    index[r["name"]] = {k: v for k, v in r.items() if k != "name"}
                    _write_index(out_dir, index, settings_dict, ref_dict)
                    if bar is not None:
                        bar.update(1)
                        if r["status"] == "failed":
                            bar.write(f"FAILED {r['name']}: {r['error']}")
                        elif "stability" in r:
                            bar.write(f"{r['name']}: unstable solution re-converged "
                                      f"{r['stability']['rounds']}x, "
                                      f"{r['stability']['lowered_by']:.6f} Ha lower")
        finally:
            if bar is not None:
                bar.close()
            if client is not None and not isinstance(scheduler, Client):
                client.close()
    _write_index(out_dir, index, settings_dict, ref_dict)
    return index


def load_dataset(out_dir, names=None):
    """All finished systems of a reference-data directory: name -> (attrs, arrays)."""
    index = load_index(out_dir)
    if not index:
        raise ReferenceDataError(out_dir, "no index.json: not a reference-data directory")
    data = {}
    for name, e in index.items():
        if names is not None and name not in names:
            continue
        if e.get("status") != "done":
            continue
        data[name] = read_h5(os.path.join(out_dir, e["file"]))
    return data
