"""From reference data to a functional: observations, GP fit, mapping, evaluation."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np

from cider_xc.descriptors import DescriptorSettings
from cider_xc.model import CiderFunctional, FxBound, RBFFx, TailGate

from .gp import IntegratedGPR, Observation, map_to_polynomial

HARTREE_TO_KCAL = 627.5094740631


def training_systems(data):
    """name -> (X (N, d), w (N,)), name -> y = E_x^ref - E_x^PBE and
    name -> F_x^PBE (N,) at the same points."""
    systems, resid, baselines = {}, {}, {}
    for name, (attrs, arrays) in data.items():
        nspin = int(attrs["nspin"])
        X = np.concatenate([arrays[f"spin{s}/x"] for s in range(nspin)], axis=1).T
        w = np.concatenate([arrays[f"spin{s}/we"] for s in range(nspin)])
        systems[name] = (np.ascontiguousarray(X), w)
        resid[name] = float(attrs["exx"]) - float(attrs["ex_pbe"])
        baselines[name] = np.concatenate([arrays[f"spin{s}/fpbe"] for s in range(nspin)])
    return systems, resid, baselines


def atom_counts(attrs):
    return Counter(json.loads(attrs["symbols"]))


def atomization_coefs(data, name):
    """{system: coef} for E(atoms) - E(molecule), or None if an atom is missing."""
    attrs = data[name][0]
    counts = atom_counts(attrs)
    if sum(counts.values()) < 2:
        return None
    coefs = {name: -1.0}
    for sym, n in counts.items():
        if sym not in data or sum(atom_counts(data[sym][0]).values()) != 1:
            return None
        coefs[sym] = coefs.get(sym, 0.0) + n
    return coefs


def default_observations(data, resid, sigma_abs=2e-3, sigma_diff=3e-4):
    obs = []
    for name in data:
        obs.append(Observation({name: 1.0}, resid[name], sigma_abs, f"Ex[{name}]"))
        coefs = atomization_coefs(data, name)
        if coefs:
            y = sum(c * resid[n] for n, c in coefs.items())
            obs.append(Observation(coefs, y, sigma_diff, f"AEx[{name}]"))
    return obs


def fit_functional(data, *, name="cider", evaluator="rbf", degree=4, n_control=200,
                   cider_x=0.25, semilocal_xc="0.75*GGA_X_PBE, GGA_C_PBE",
                   trained_on="exact_exchange", random_state=0, verbose=False,
                   sigma_abs=2e-3, sigma_diff=3e-4, gp_kwargs=None, map_kwargs=None,
                   bound=None, tail_gate=None):
    """Fit the GP on ``data`` (name -> (attrs, arrays)) and turn it into the
    evaluator of a model file.

    evaluator="rbf" (default) keeps the GP mean itself (exact, fast numba
    kernel; the only deviation from the GP is the constant subtracted to make
    f(0) = 0 exactly, reported); evaluator="polynomial" maps it to a
    polynomial of ``degree`` (measured to generalise much worse: see README).
    bound: None, an :class:`FxBound` or its dict ({lower, upper, fmax}): the
    bounded output map of F_x, fitted through (Gauss-Newton, see
    :mod:`cider_xc.training.gp`) and stored in the model.
    tail_gate: None, a :class:`TailGate` or its dict ({start, end}): the switch
    of f_ML in density tails, trained through and stored in the model.

    Returns (CiderFunctional, report)."""
    settings = {a["descriptor_settings"] for a, _ in data.values()}
    if len(settings) != 1:
        raise ValueError("reference data computed with different descriptor settings")
    settings = DescriptorSettings.fromdict(json.loads(settings.pop()))
    if isinstance(bound, dict):
        bound = FxBound.fromdict(bound)
    if isinstance(tail_gate, dict):
        tail_gate = TailGate.fromdict(tail_gate)
    systems, resid, baselines = training_systems(data)
    obs = default_observations(data, resid, sigma_abs=sigma_abs, sigma_diff=sigma_diff)
    gp = IntegratedGPR(n_control=n_control, random_state=random_state, verbose=verbose,
                       bound=bound, gate=tail_gate, **(gp_kwargs or {}))
    gp.fit(systems, obs, baselines)
    if evaluator == "polynomial":
        if bound is not None or tail_gate is not None:
            raise ValueError("the polynomial evaluator does not support a bound or a tail gate")
        fx, report = map_to_polynomial(gp, systems, degree=degree, random_state=random_state,
                                       **(map_kwargs or {}))
    elif evaluator == "rbf":
        fx = RBFFx(gp.control_points_, gp.amplitude_ * gp.beta_, gp.length_scale_)
        X = np.concatenate([s[0] for s in systems.values()])
        idx = np.random.default_rng(random_state).choice(len(X), min(100000, len(X)),
                                                         replace=False)
        dev = fx(X[idx].T)[0] - gp.predict(X[idx])
        report = {"evaluator": "rbf", "n_control": len(gp.control_points_),
                  "gp_value_at_uniform_gas": fx.offset,
                  "max_deviation": float(np.abs(dev).max())}
    else:
        raise ValueError(f"unknown evaluator {evaluator!r} (rbf or polynomial)")
    gp_res = evaluate_gp(gp, data, systems, baselines)
    report.update({
        "gp_mae_ex_kcal": gp_res[0], "gp_mae_aex_kcal": gp_res[1],
        "n_systems": len(systems), "n_observations": len(obs),
        "length_scale": gp.length_scale_, "amplitude": gp.amplitude_,
        "log_marginal_likelihood": float(gp.log_marginal_likelihood_),
    })
    header = {"composition": {"trained_on": trained_on},
              "provenance": {"systems": sorted(systems), "fit_report": report,
                             "reference": json.loads(next(iter(data.values()))[0]["reference"])}}
    gp_state = {"control_points": gp.control_points_, "beta": gp.beta_, "cov": gp.cov_,
                "length_scale": gp.length_scale_, "amplitude": gp.amplitude_}
    if bound is not None:
        report["bound"] = bound.todict()
        report["gauss_newton_steps"] = gp.gauss_newton_steps_
    if tail_gate is not None:
        report["tail_gate"] = tail_gate.todict()
    fn = CiderFunctional(settings, fx, cider_x=cider_x, semilocal_xc=semilocal_xc,
                         name=name, header=header, gp=gp_state, bound=bound, gate=tail_gate)
    return fn, report


def evaluate_gp(gp, data, systems, baselines=None):
    """MAE (kcal/mol) of the GP itself: absolute and atomization exchange."""
    resid = {n: float(a["exx"]) - float(a["ex_pbe"]) for n, (a, _) in data.items()}
    pred = {n: gp.integrate(*systems[n], None if baselines is None else baselines[n])
            for n in data}
    ex = np.mean([abs(pred[n] - resid[n]) for n in data]) * HARTREE_TO_KCAL
    ae = [abs(sum(c * (pred[k] - resid[k]) for k, c in co.items()))
          for n in data if (co := atomization_coefs(data, n))]
    return float(ex), float(np.mean(ae) * HARTREE_TO_KCAL) if ae else float("nan")


def evaluate_exchange(fn, data):
    """Exchange energies of the functional's F_x on reference orbitals.

    Returns a dict with per-system rows and MAEs (kcal/mol) of absolute
    exchange and of atomization exchange, for CIDER and PBE, and with a bound,
    the share of the exchange weight |w| where F_PBE + g f_ML leaves the
    bound's identity range [lower, max(upper, F_PBE)] (where T saturates;
    ``saturated_weight_fraction``, per system as ``saturated``)."""
    systems, _, baselines = training_systems(data)
    rows = {}
    sat_w = tot_w = 0.0
    for name, (attrs, arrays) in data.items():
        X, w = systems[name]
        F, _, _, raw = fn.enhancement(X.T, fpbe=baselines[name], return_raw=True)
        e_c = float(w @ F)
        rows[name] = {"exx": float(attrs["exx"]), "cider": e_c, "pbe": float(attrs["ex_pbe"])}
        if fn.bound is not None:
            out = np.isfinite(fn.bound.range_target(raw, baselines[name]))
            aw = np.abs(w)
            rows[name]["saturated"] = float(aw[out].sum() / max(aw.sum(), 1e-300))
            sat_w += float(aw[out].sum())
            tot_w += float(aw.sum())
    ae = {}
    for name in data:
        coefs = atomization_coefs(data, name)
        if coefs:
            ae[name] = {k: sum(c * rows[n][k] for n, c in coefs.items())
                        for k in ("exx", "cider", "pbe")}

    def mae(tab, key):
        if not tab:
            return float("nan")
        return float(np.mean([abs(r[key] - r["exx"]) for r in tab.values()]) * HARTREE_TO_KCAL)
    out = {"systems": rows, "atomization": ae,
           "mae_ex_cider": mae(rows, "cider"), "mae_ex_pbe": mae(rows, "pbe"),
           "mae_aex_cider": mae(ae, "cider"), "mae_aex_pbe": mae(ae, "pbe")}
    if fn.bound is not None:
        out["saturated_weight_fraction"] = sat_w / max(tot_w, 1e-300)
    return out


def calibrate_domain(fn, data, bad_kcal=10.0, protect=(), point_stds=None,
                     fractions=None, quiet_data=None):
    """Choose the out-of-domain warning thresholds on held-out data.

    For every system: the share of its exchange energy (|w_g e_g|) on points
    whose GP standard deviation exceeds a point threshold, and its actual
    exchange error |E_x^CIDER - E_x^HF| on the reference orbitals.  A system
    is *bad* above ``bad_kcal``.  Over a grid of (point threshold, weight
    fraction) pairs, pick the one that flags the most bad systems minus
    wrongly flagged ones, never flagging a system named in ``protect`` (for
    example the G2-1 molecules, inside the training chemistry) nor any system
    of ``quiet_data`` (same form as ``data``; the training data: a system the
    model was fitted to is in its domain by definition; the first shipped
    calibration without it warned on the H atom, 0.1 kcal/mol off).

    Returns a dict {point_std, weight_fraction, bad_kcal, n_bad, n_flagged,
    n_flagged_bad, spearman} for ``header["domain"]``.
    """
    from scipy.stats import spearmanr
    systems, _, baselines = training_systems(data)
    prior = float(fn.gp["amplitude"]) ** 0.5
    point_stds = point_stds or [prior * f for f in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    fractions = fractions or [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    stds, errs, names, scale = {}, [], [], []
    for name, (X, w) in systems.items():
        std = fn.gated_uncertainty(X.T)
        aw = np.abs(w)
        stds[name] = (std, aw)
        F = fn.enhancement(X.T, fpbe=baselines[name])[0]
        errs.append(abs(float(w @ F) - float(data[name][0]["exx"])) * HARTREE_TO_KCAL)
        scale.append(float(aw @ std))
        names.append(name)
    errs = np.array(errs)
    bad = errs > bad_kcal
    prot = np.array([n in set(protect) for n in names])
    quiet = []
    if quiet_data:
        qsys, _, _ = training_systems(quiet_data)
        quiet = [(fn.gated_uncertainty(X.T), np.abs(w)) for X, w in qsys.values()]
    best = None
    for thr in point_stds:
        share = np.array([a[s > thr].sum() / a.sum() for s, a in (stds[n] for n in names)])
        qshare = np.array([a[s > thr].sum() / a.sum() for s, a in quiet])
        for frac in fractions:
            flag = share > frac
            if np.any(flag & prot) or np.any(qshare > frac):
                continue
            score = int((flag & bad).sum()) - int((flag & ~bad).sum())
            if best is None or score > best[0]:
                best = (score, thr, frac, flag)
    if best is None:
        raise ValueError("no threshold pair avoids flagging the protected systems")
    _, thr, frac, flag = best
    return {"point_std": float(thr), "weight_fraction": float(frac),
            "bad_kcal": float(bad_kcal), "n_systems": len(names), "n_bad": int(bad.sum()),
            "n_flagged": int(flag.sum()), "n_flagged_bad": int((flag & bad).sum()),
            "spearman_error_scale": float(spearmanr(scale, errs).statistic),
            "flagged": sorted(n for n, f in zip(names, flag) if f)}
