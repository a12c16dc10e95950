"""Gaussian process for the enhancement-factor correction f_ML, trained on
integrated observations (subset of regressors).

With control points X_c (k-means on the training descriptors, plus the
uniform-gas point x = 0), write f(x) = sum_c beta_c k(x, x_c) with the GP prior
beta ~ N(0, K_cc^{-1}).  An observation is linear in f:

    y_m = sum_g w_g f(x_g) + noise  =>  row Phi_m = sum_g w_g k(x_g, X_c),

for the exchange energy of a system (w_g = grid weight * e_x^LDA, y_m = E_x^ref -
E_x^PBE on the same orbitals), differences of such rows for energy differences
(atomization energies), and a noiseless pseudo-observation f(0) = 0 for the
uniform gas.  The fit is the regularised least squares

    (Phi^T S^-1 Phi + K_cc) beta = Phi^T S^-1 y,

the posterior covariance of beta is the inverse of that matrix (both
evaluated in the equivalent observation-space form for stability), and the
kernel hyperparameters (RBF length scale and amplitude) are chosen by the
log marginal likelihood of y ~ N(0, Phi K_cc^-1 Phi^T + S) on a grid.

With a bounded output map T (:class:`cider_xc.model.FxBound`), the model
exchange energy sum_g w_g T(F_PBE,g + f(x_g)) is no longer linear in beta.
The fit then takes Gauss-Newton steps from the linear solution: each step
linearises T around the current f, which gives rows sum_g w_g T'_g k(x_g, X_c)
and shifted targets, and solves the same regularised least squares (kernel
hyperparameters kept from the linear fit).

T's saturated branches are flat, so a least-squares fit through T can park
points there: F_PBE + f far below ``lower`` costs nothing in the fit (T
barely moves) but makes F_x steep where T turns (measured on the first
bounded default: raw values down to -1.9 in atoms, 0.6% of the exchange
weight of the held-out systems saturated, grid-sensitive energies).  With
``penalty_sigma`` the objective gets one-sided pseudo-observations on a fixed
sample of training points: F_PBE + g f >= lower and <= max(upper, F_PBE),
each violated one a row g k(x, X_c) with that target and noise
``penalty_sigma``.  The active set is re-chosen at every Gauss-Newton step
(the hinge's Newton step), so the fit stays where T is the identity and the
problem is nearly linear.  A tail
gate g(x_p) (:class:`cider_xc.model.TailGate`) multiplies f: its rows carry
w_g g_g, so it costs nothing extra.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import scipy.linalg


@dataclasses.dataclass
class Observation:
    """y = sum_s coef[s] * (sum_g w_g f(x_g) over system s) + N(0, sigma^2)."""
    coefs: dict
    y: float
    sigma: float
    label: str = ""


def _rbf(X, Y, length_scale, amplitude):
    """amplitude * exp(-|x - y|^2 / (2 l^2)); X (n, d), Y (m, d)."""
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel
    return (ConstantKernel(amplitude, "fixed") * RBF(length_scale, "fixed"))(X, Y)


class IntegratedGPR:
    """scikit-learn style estimator: ``fit(systems, observations)`` returns self.

    Parameters
    ----------
    n_control : int
        Number of k-means control points (the origin is always added).
    length_scales, amplitudes : sequences
        Grid searched by log marginal likelihood.
    random_state : int or None
    chunk : int
        Points per chunk when integrating kernel rows.
    """

    def __init__(self, n_control=200, length_scales=(0.5, 0.65, 0.8),
                 amplitudes=(0.03, 0.1, 0.3), random_state=0, chunk=20000,
                 max_kmeans_points=200000, verbose=False, bound=None,
                 n_gauss_newton=20, gate=None, penalty_sigma=None,
                 penalty_points=20000, penalty_box_points=0):
        self.n_control = n_control
        self.length_scales = length_scales
        self.amplitudes = amplitudes
        self.random_state = random_state
        self.chunk = chunk
        self.max_kmeans_points = max_kmeans_points
        self.verbose = verbose
        self.bound = bound
        self.n_gauss_newton = n_gauss_newton
        self.gate = gate
        self.penalty_sigma = penalty_sigma
        self.penalty_points = penalty_points
        self.penalty_box_points = penalty_box_points

    def _gate(self, X):
        """g(x_p) of the tail gate at X (N, d) (ones without a gate)."""
        if self.gate is None:
            return np.ones(len(X))
        return self.gate.factor(X.T)[0]

    # systems: name -> (X (N, d), w (N,))
    def _control_points(self, systems):
        from sklearn.cluster import MiniBatchKMeans
        rng = np.random.default_rng(self.random_state)
        X = np.concatenate([s[0] for s in systems.values()])
        w = np.abs(np.concatenate([s[1] for s in systems.values()]))
        n = min(self.max_kmeans_points, len(X))
        idx = rng.choice(len(X), n, replace=False, p=w / w.sum())
        km = MiniBatchKMeans(self.n_control, random_state=self.random_state, n_init=3)
        km.fit(X[idx])
        return np.vstack([np.zeros((1, X.shape[1])), km.cluster_centers_])

    def _system_rows(self, systems, Xc, ls):
        rows = {}
        for name, (X, w) in systems.items():
            r = np.zeros(len(Xc))
            for i in range(0, len(X), self.chunk):
                Xi = X[i:i + self.chunk]
                r += (w[i:i + self.chunk] * self._gate(Xi)) @ _rbf(Xi, Xc, ls, 1.0)
            rows[name] = r
        return rows

    def _penalty_sample(self, systems, baselines):
        """Fixed sample of training points for the range pseudo-observations:
        half drawn by |w| (where the energy is), half uniformly (where it is
        not, but the potential still is).  Returns the gated kernel rows g
        k(x, X_c) (amplitude not included) and F_PBE there."""
        rng = np.random.default_rng(self.random_state + 1)
        X = np.concatenate([systems[n][0] for n in systems])
        w = np.abs(np.concatenate([systems[n][1] for n in systems]))
        fb = np.concatenate([baselines[n] for n in systems])
        n = min(self.penalty_points // 2, len(X))
        idx = np.unique(np.concatenate([rng.choice(len(X), n, replace=False, p=w / w.sum()),
                                        rng.choice(len(X), n, replace=False)]))
        Xs, fbs = X[idx], fb[idx]
        if self.penalty_box_points:
            # plus points drawn uniformly over the whole descriptor box (x_p in
            # [0, 1), the rest in [-1, 1)): the range is kept where no
            # training system goes as well (solids, other chemistry)
            from cider_xc.model import pbe_enhancement
            Xb = rng.uniform(-1.0, 1.0, (self.penalty_box_points, X.shape[1]))
            Xb[:, 0] = rng.uniform(0.0, 1.0 - 1e-9, self.penalty_box_points)
            Xs = np.vstack([Xs, Xb])
            fbs = np.concatenate([fbs, pbe_enhancement(Xb[:, 0] / (1.0 - Xb[:, 0]))[0]])
        return self._gate(Xs)[:, None] * _rbf(Xs, self.control_points_, self.length_scale_, 1.0), fbs

    def penalty_violations(self, Gk, fb):
        """Raw F_PBE + g f at the sample and, per point, the target it is
        pulled to (nan where it is inside the range)."""
        y = fb + Gk @ (self.amplitude_ * self.beta_)
        return y, self.bound.range_target(y, fb)

    def fit(self, systems, observations, baselines=None):
        """systems: name -> (X (N, d), w (N,)); baselines: name -> F_x^PBE (N,),
        needed with a bound (the map acts on F_PBE + f)."""
        obs = list(observations)
        if not obs:
            raise ValueError("no observations to fit")
        missing = {n for o in obs for n in o.coefs} - set(systems)
        if missing:
            raise ValueError(f"observations refer to unknown systems: {sorted(missing)}")
        Xc = self._control_points(systems)
        y = np.array([o.y for o in obs] + [0.0])
        sig = np.array([o.sigma for o in obs] + [1e-6])     # uniform-gas f(0) = 0
        best = None
        for ls in self.length_scales:
            rows = self._system_rows(systems, Xc, ls)
            Phi1 = np.array([sum(c * rows[n] for n, c in o.coefs.items()) for o in obs]
                            + [_rbf(np.zeros((1, Xc.shape[1])), Xc, ls, 1.0)[0]])
            Kcc1 = _rbf(Xc, Xc, ls, 1.0) + 1e-8 * np.eye(len(Xc))
            for amp in self.amplitudes:
                Phi, Kcc = amp * Phi1, amp * Kcc1
                # y ~ N(0, Phi Kcc^-1 Phi^T + S)
                L = scipy.linalg.cho_factor(Kcc, lower=True)
                C = Phi @ scipy.linalg.cho_solve(L, Phi.T) + np.diag(sig ** 2)
                try:
                    Lc = scipy.linalg.cho_factor(C, lower=True)
                except np.linalg.LinAlgError:
                    continue
                alpha = scipy.linalg.cho_solve(Lc, y)
                lml = (-0.5 * y @ alpha - np.log(np.diag(Lc[0])).sum()
                       - 0.5 * len(y) * np.log(2 * np.pi))
                if self.verbose:
                    print(f"  length_scale={ls:g} amplitude={amp:g}: log ML = {lml:.3f}")
                if best is None or lml > best[0]:
                    best = (lml, ls, amp, Phi, Kcc, L, Lc)
        if best is None:
            raise RuntimeError("no kernel hyperparameters gave a valid fit")
        lml, ls, amp, Phi, Kcc, L, Lc = best
        self.control_points_ = Xc
        self.length_scale_ = ls
        self.amplitude_ = amp
        self.log_marginal_likelihood_ = lml
        self._solve(Phi, Kcc, L, Lc, y)
        self.gauss_newton_steps_ = []
        if self.bound is not None and self.n_gauss_newton == 0:
            # the linear (unbounded) solution, with the bound applied only when
            # the model is evaluated: residuals of that exact bounded model
            if baselines is None or not set(systems) <= set(baselines):
                raise ValueError("a bounded fit needs the F_x^PBE baseline of every system")
            pred = {n: self.integrate(X, w, baselines[n]) for n, (X, w) in systems.items()}
            self.residuals_ = y - np.array(
                [sum(c * pred[n] for n, c in o.coefs.items()) for o in obs] + [0.0])
        elif self.bound is not None:
            if baselines is None or not set(systems) <= set(baselines):
                raise ValueError("a bounded fit needs the F_x^PBE baseline of every system")
            uni = Phi[-1]
            n_real = len(y)
            if self.penalty_sigma is not None:
                Gk, fbs = self._penalty_sample(systems, baselines)
                self.penalty_sample_size_ = len(fbs)

            def linearise():
                """Rows, shifted targets, noise and the exact objective at beta_
                (range pseudo-observations appended for the violated sample
                points)."""
                rows, offs = self._linearised_rows(systems, baselines)
                P = np.array([sum(c * rows[n] for n, c in o.coefs.items()) for o in obs]
                             + [uni])
                yk = y - np.array([sum(c * offs[n] for n, c in o.coefs.items())
                                   for o in obs] + [0.0])
                sk = sig
                n_act = 0
                if self.penalty_sigma is not None:
                    _, target = self.penalty_violations(Gk, fbs)
                    act = np.isfinite(target)
                    n_act = int(act.sum())
                    P = np.vstack([P, self.amplitude_ * Gk[act]])
                    yk = np.concatenate([yk, target[act] - fbs[act]])
                    sk = np.concatenate([sig, np.full(n_act, float(self.penalty_sigma))])
                r = (yk - P @ self.beta_) / sk
                return P, yk, sk, float(r @ r + self.beta_ @ Kcc @ self.beta_), \
                    (r * sk)[:n_real], n_act

            # damped Gauss-Newton from f = 0 (where T is linearised around
            # F_PBE itself; the unbounded solution can sit far out in T's
            # saturated branches): a step that raises the exact objective
            # (chi^2 + prior) is halved back towards the last accepted point
            self.beta_ = np.zeros_like(self.beta_)
            best = None
            for it in range(self.n_gauss_newton + 1):
                P, yk, sk, J, res, n_act = linearise()
                step = {"objective": J, "accepted": True}
                if self.penalty_sigma is not None:
                    step["range_violations"] = n_act
                if best is not None and J > best[1]:
                    self.beta_ = best[0] + 0.5 * (self.beta_ - best[0])
                    step["accepted"] = False
                    self.gauss_newton_steps_.append(step)
                    if self.verbose:
                        print(f"  Gauss-Newton step {it}: objective {J:.6g} rejected, halved")
                    continue
                best = (self.beta_, J, res)
                self.gauss_newton_steps_.append(step)
                if self.verbose:
                    extra = f", {n_act} range violations" if self.penalty_sigma is not None else ""
                    print(f"  Gauss-Newton step {it}: objective {J:.6g}{extra}")
                if it == self.n_gauss_newton:
                    break
                C = P @ scipy.linalg.cho_solve(L, P.T) + np.diag(sk ** 2)
                Lc = scipy.linalg.cho_factor(C, lower=True)
                beta_old = self.beta_
                self._solve(P, Kcc, L, Lc, yk)
                if float(np.abs(Kcc @ (self.beta_ - beta_old)).max()) < 1e-6:
                    P, yk, sk, J, res, n_act = linearise()
                    if J <= best[1]:
                        best = (self.beta_, J, res)
                    break
            # the best accepted point, with the residuals of the exact model
            self.beta_, _, self.residuals_ = best
        self.observations_ = obs
        return self

    def _solve(self, Phi, Kcc, L, Lc, y):
        # observation-space form (stable with near-noiseless rows):
        # beta = Kcc^-1 Phi^T C^-1 y,  cov = Kcc^-1 - Kcc^-1 Phi^T C^-1 Phi Kcc^-1
        B = scipy.linalg.cho_solve(L, Phi.T)
        self.beta_ = B @ scipy.linalg.cho_solve(Lc, y)
        self.cov_ = scipy.linalg.cho_solve(L, np.eye(len(Kcc))) - B @ scipy.linalg.cho_solve(Lc, B.T)
        self.cov_ = 0.5 * (self.cov_ + self.cov_.T)
        self.residuals_ = y - Phi @ self.beta_

    def _linearised_rows(self, systems, baselines):
        """Per system: row sum_g w_g T'_g k(x_g, X_c) (amplitude included) and
        offset sum_g w_g (T(F_PBE + f) - F_PBE - T' f) at the current f."""
        rows, offs = {}, {}
        wc = self.amplitude_ * self.beta_
        for name, (X, w) in systems.items():
            fb = baselines[name]
            r = np.zeros(len(wc))
            o = 0.0
            for i in range(0, len(X), self.chunk):
                Xi = X[i:i + self.chunk]
                K = _rbf(Xi, self.control_points_, self.length_scale_, 1.0)
                g = self._gate(Xi)
                f = g * (K @ wc)
                t, dt = self.bound(fb[i:i + self.chunk] + f)
                wi = w[i:i + self.chunk]
                r += (wi * dt * g) @ K
                o += wi @ (t - fb[i:i + self.chunk] - dt * f)
            rows[name] = self.amplitude_ * r
            offs[name] = o
        return rows, offs

    def predict(self, X, return_std=False):
        """f_ML at X (N, d); optionally the posterior standard deviation."""
        K = _rbf(X, self.control_points_, self.length_scale_, self.amplitude_)
        mean = K @ self.beta_
        if not return_std:
            return mean
        var = np.einsum("nc,cd,nd->n", K, self.cov_, K)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def integrate(self, X, w, baseline=None):
        """sum_g w_g g_g f(x_g) (g: the tail gate, 1 without one); with a bound
        and the F_x^PBE baseline, the exchange energy beyond PBE,
        sum_g w_g (T(F_PBE + g f) - F_PBE)."""
        out = 0.0
        for i in range(0, len(X), self.chunk):
            f = self.predict(X[i:i + self.chunk]) * self._gate(X[i:i + self.chunk])
            if self.bound is not None and baseline is not None:
                fb = baseline[i:i + self.chunk]
                f = self.bound(fb + f)[0] - fb
            out += w[i:i + self.chunk] @ f
        return out


def polynomial_terms(n_features, degree):
    """All exponent tuples of total degree 1..degree."""
    return np.array([e for d in range(1, degree + 1)
                     for e in itertools.product(range(d + 1), repeat=n_features)
                     if sum(e) == d], dtype=np.int64)


def map_to_polynomial(gp, systems, degree=4, pointwise=1e-3, n_samples=200000,
                      random_state=0, chunk=50000):
    """Polynomial (no constant term) that reproduces the GP.

    The GP's predictions of every training observation (system exchange
    energies, atomization differences) are matched in the observations' own
    noise units, and the GP mean itself pointwise on the training descriptor
    distribution (points drawn with probability ~ |w|) with relative weight
    ``pointwise``, so the mapped model keeps the GP's energetics and stays
    close to it between observations.

    systems : name -> (X (N, d), w (N,)) as given to ``gp.fit``.
    Returns (PolynomialFx, report dict)."""
    from cider_xc.model import PolynomialFx
    rng = np.random.default_rng(random_state)
    d = next(iter(systems.values()))[0].shape[1]
    terms = polynomial_terms(d, degree)
    fx0 = PolynomialFx(terms, np.zeros(len(terms)))
    # integrated basis rows and GP values per system
    Rb, Rg = {}, {}
    for name, (X, w) in systems.items():
        rb = np.zeros(len(terms))
        for i in range(0, len(X), chunk):
            rb += fx0.basis(X[i:i + chunk].T) @ w[i:i + chunk]
        Rb[name] = rb
        Rg[name] = gp.integrate(X, w)
    obs = gp.observations_
    A1 = np.array([sum(c * Rb[n] for n, c in o.coefs.items()) / o.sigma for o in obs])
    b1 = np.array([sum(c * Rg[n] for n, c in o.coefs.items()) / o.sigma for o in obs])
    X = np.concatenate([s[0] for s in systems.values()])
    w = np.abs(np.concatenate([s[1] for s in systems.values()]))
    idx = rng.choice(len(X), min(n_samples, len(X)), replace=False, p=w / w.sum())
    Xs = X[idx]
    target = gp.predict(Xs)
    B = fx0.basis(Xs.T).T
    scale = np.sqrt(pointwise * len(obs) / len(Xs)) / max(np.std(target), 1e-12)
    A = np.vstack([A1, scale * B])
    b = np.concatenate([b1, scale * target])
    coef = np.linalg.lstsq(A, b, rcond=1e-12)[0]
    fx = PolynomialFx(terms, coef)
    dev = fx(Xs.T)[0] - target
    e_dev = np.array([Rb[n] @ coef - Rg[n] for n in systems])
    report = {"degree": degree, "n_terms": len(terms), "n_samples": len(idx),
              "rms_deviation": float(np.sqrt(np.mean(dev ** 2))),
              "max_deviation": float(np.abs(dev).max()),
              "rms_gp": float(np.sqrt(np.mean(target ** 2))),
              "max_energy_deviation_map_vs_gp_kcal": float(np.abs(e_dev).max() * 627.5094740631),
              "mean_energy_deviation_map_vs_gp_kcal": float(np.abs(e_dev).mean() * 627.5094740631)}
    return fx, report
