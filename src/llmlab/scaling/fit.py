"""Scaling-law fits: Kaplan power laws, Chinchilla approach 2 (IsoFLOP parabolas) and approach 3.

Every fit takes plain arrays and returns a JSON-ready dict with a `"form"` key and the key `"N"`
naming which parameter count the `params` array holds ("non_embedding", "total", or whatever the
caller says), so a fit never silently mixes conventions.

**Kaplan et al. (2020)**, one variable X ∈ {N, D, C} at a time:

    L(X) = (X_c / X)^α                 fitted as a line in log space: log L = α log X_c − α log X
    L(X) = E + (X_c / X)^α             with an irreducible term; least squares on log L

**Chinchilla approach 2** (Hoffmann et al. 2022, §3.2): for each compute budget C (an IsoFLOP
profile), fit a parabola L ≈ p₀ + p₁ x + p₂ x² in x = log N. Its vertex x* = −p₁ / (2 p₂) is the
compute-optimal size N_opt(C) = e^{x*}, with D_opt(C) = C / (6 N_opt). A line through the vertices
in log-log space gives N_opt ∝ C^a and D_opt ∝ C^b.

**Chinchilla approach 3** (§3.3, as re-done by Besiroglu et al. 2024):

    L(N, D) = E + A / N^α + B / D^β

with θ = (a, b, e, α, β), A = eᵃ, B = eᵇ, E = eᵉ, the prediction is taken in log space,

    log L̂ = LSE(a − α log N, b − β log D, e)          (LSE = log-sum-exp)

and θ minimises Σᵢ Huber_δ(log L̂ᵢ − log Lᵢ) with δ = 10⁻³, by L-BFGS from a grid of starts
(the best end point wins). Here all starts run at once in one vectorised L-BFGS (numpy, analytic
gradient, scipy's default stopping rules); the best 8 end points are then polished with scipy's
L-BFGS-B at tight tolerances. The published 4,500-start grid takes seconds.
Bootstrap intervals refit the points resampled with replacement, each resample a row of weights in
the same batched optimiser.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from llmlab.errors import UserError
from llmlab.scaling.lbfgs import lbfgs_batched

ArrayLike = Sequence[float] | np.ndarray

# Besiroglu et al.'s grid of starting points (4,500 = 5 · 5 · 6 · 6 · 5 for α, β, a, b, e).
PUBLISHED_GRID = {
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
    "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
}


# ---------------------------------------------------------------------------------------------
# input checks


def _as_positive(name: str, values: ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise UserError(f"{name}: no values; give at least one data point")
    bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
    if bad.size:
        raise UserError(
            f"{name}: value {float(x[bad[0]]):g} at row {bad[0] + 1} is not a positive number; "
            "scaling laws need positive params, tokens, flops and loss"
        )
    return x


def _check_count(n_points: int, n_params: int, what: str) -> None:
    if n_points < n_params:
        raise UserError(
            f"{what}: {n_points} data point(s) for {n_params} free parameters; "
            f"give at least {n_params} points"
        )


# ---------------------------------------------------------------------------------------------
# Kaplan power laws


def fit_kaplan(
    x: ArrayLike,
    loss: ArrayLike,
    *,
    variable: str = "params",
    irreducible: bool = False,
    n_kind: str = "unspecified",
) -> dict:
    """Fit L(X) = E + (X_c / X)^α (E = 0 unless `irreducible`) in log space.

    Without E: ordinary least squares of log L on log X (slope −α, intercept α log X_c).
    With E: least squares on log L with log L̂ = LSE(c − α log X, e), c = α log X_c, E = eᵉ, from a
    small grid of starts. Returns {"form": "kaplan", "variable", "alpha", "x_c", "A", "E", "N",
    "rmse_log"}, where A = X_c^α so that L = E + A / X^α.
    """
    x = _as_positive(variable, x)
    y = _as_positive("loss", loss)
    if x.shape != y.shape:
        raise UserError(f"{variable} and loss have different lengths ({x.size} vs {y.size})")
    lx, ly = np.log(x), np.log(y)
    _check_count(x.size, 3 if irreducible else 2, f"Kaplan fit of L({variable})")
    if np.ptp(lx) == 0:
        raise UserError(f"{variable}: all values are equal; a power law needs at least two different values")
    if not irreducible:
        slope, intercept = np.polyfit(lx, ly, 1)
        alpha, c, e = -slope, intercept, -np.inf
    else:
        grid = np.array(
            list(
                itertools.product(
                    np.arange(0.0, 26.0, 2.5), [0.05, 0.2, 0.5, 1.0, 1.5], [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0]
                )
            )
        )
        theta = _multistart(grid, lx[:, None], ly, delta=math.inf, polish=4)
        c, alpha, e = theta
    pred = _predict_log(np.array([c, alpha, e]), lx[:, None]) if irreducible else intercept + slope * lx
    with np.errstate(over="ignore", divide="ignore"):
        x_c = float(np.exp(c / alpha)) if alpha > 0 else math.inf  # inf: no decrease to speak of
    return {
        "form": "kaplan",
        "variable": variable,
        "N": n_kind,
        "alpha": float(alpha),
        "x_c": float(x_c),
        "A": float(math.exp(c)),
        "E": float(math.exp(e)) if irreducible else 0.0,
        "irreducible": irreducible,
        "n_points": int(x.size),
        "rmse_log": float(np.sqrt(np.mean((pred - ly) ** 2))),
    }


# ---------------------------------------------------------------------------------------------
# Chinchilla approach 2: IsoFLOP parabolas


def group_budgets(flops: np.ndarray, rel_tol: float = 0.1) -> np.ndarray:
    """Label runs with the same compute budget: sorted in log C, a new group starts wherever two
    neighbours differ by more than a factor (1 + rel_tol). Returns an int label per run."""
    order = np.argsort(flops)
    labels = np.empty(flops.size, dtype=int)
    group, prev = 0, None
    for i in order:
        if prev is not None and flops[i] > prev * (1.0 + rel_tol):
            group += 1
        labels[i] = group
        prev = flops[i]
    return labels


def fit_isoflop(
    params: ArrayLike,
    tokens: ArrayLike,
    loss: ArrayLike,
    *,
    flops: ArrayLike | None = None,
    n_kind: str = "unspecified",
    rel_tol: float = 0.1,
) -> dict:
    """Chinchilla approach 2: a parabola in log N per IsoFLOP profile, then N_opt ∝ C^a, D_opt ∝ C^b.

    Runs are grouped into profiles by `flops` (default C = 6ND) within a factor (1 + rel_tol); each
    profile's C is the geometric mean of its runs' C. A profile needs ≥ 3 runs and an upward
    parabola (p₂ > 0); others are listed under "skipped". D_opt = C / (6 N_opt) at each vertex.
    Lines log N_opt = log k_N + a log C and log D_opt = log k_D + b log C are least-squares fits.
    """
    n = _as_positive("params", params)
    d = _as_positive("tokens", tokens)
    y = _as_positive("loss", loss)
    if not n.size == d.size == y.size:
        raise UserError("params, tokens and loss have different lengths")
    c = 6.0 * n * d if flops is None else _as_positive("flops", flops)
    labels = group_budgets(c, rel_tol)
    profiles, skipped = [], []
    for g in range(labels.max() + 1):
        m = labels == g
        budget = float(np.exp(np.mean(np.log(c[m]))))
        x = np.log(n[m])
        if m.sum() < 3 or np.unique(x).size < 3:
            skipped.append({"flops": budget, "runs": int(m.sum()), "why": "fewer than 3 model sizes"})
            continue
        p2, p1, p0 = np.polyfit(x, y[m], 2)
        if p2 <= 0:
            skipped.append({"flops": budget, "runs": int(m.sum()), "why": "parabola opens downward"})
            continue
        x_opt = -p1 / (2 * p2)
        n_opt = math.exp(x_opt)
        profiles.append(
            {
                "flops": budget,
                "runs": int(m.sum()),
                "params_opt": n_opt,
                "tokens_opt": budget / (6.0 * n_opt),
                "loss_opt": float(p0 + p1 * x_opt + p2 * x_opt**2),
                "parabola": [float(p0), float(p1), float(p2)],
                "inside": bool(x.min() <= x_opt <= x.max()),
            }
        )
    if len(profiles) < 2:
        raise UserError(
            f"IsoFLOP fit: {len(profiles)} usable profile(s) (need ≥ 2 compute budgets with ≥ 3 "
            f"model sizes each and a minimum); skipped: {skipped}"
        )
    lc = np.log([p["flops"] for p in profiles])
    a, log_kn = np.polyfit(lc, np.log([p["params_opt"] for p in profiles]), 1)
    b, log_kd = np.polyfit(lc, np.log([p["tokens_opt"] for p in profiles]), 1)
    return {
        "form": "isoflop",
        "N": n_kind,
        "a": float(a),
        "b": float(b),
        "k_N": float(math.exp(log_kn)),
        "k_D": float(math.exp(log_kd)),
        "profiles": profiles,
        "skipped": skipped,
        "n_points": int(n.size),
    }


# ---------------------------------------------------------------------------------------------
# Chinchilla approach 3: L(N, D) = E + A/N^α + B/D^β


def _predict_log(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """log L̂ = LSE(c₁ − α₁ log X₁, …, c_k − α_k log X_k, e) for θ = (c₁..c_k, α₁..α_k, e).

    θ has shape [P] or [S, P]; logx is [n, k]. Returns [n] or [S, n]."""
    k = logx.shape[1]
    single = theta.ndim == 1
    theta = np.atleast_2d(theta)
    z = theta[:, None, :k] - theta[:, None, k : 2 * k] * logx[None]  # [S, n, k]
    z = np.concatenate([z, np.broadcast_to(theta[:, None, 2 * k :], (*z.shape[:2], 1))], axis=2)
    out = np.logaddexp.reduce(z, axis=2)
    return out[0] if single else out


def _objective(
    theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """f(θ) = Σᵢ wᵢ Huber_δ(rᵢ), rᵢ = log L̂ᵢ − log Lᵢ, and its gradient, for S parameter vectors at once.

    Huber_δ(r) = r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (δ = ∞ gives least squares); its derivative is
    ψ(r) = clip(r, −δ, δ). With zⱼ = cⱼ − αⱼ log Xⱼ, z_E = e and softmax weights pⱼ = e^{zⱼ} / Σ e^{z}:
        ∂f/∂cⱼ = Σᵢ wψ pⱼ,   ∂f/∂αⱼ = −Σᵢ wψ pⱼ log Xⱼ,   ∂f/∂e = Σᵢ wψ p_E.
    theta [S, 2k+1]; weights [S, n] or None. Returns f [S], grad [S, 2k+1]. (Written with 2-D
    arrays and matrix products only: this is the inner loop of the 4,500-start fit.)
    """
    k = logx.shape[1]
    zs = [theta[:, j, None] - theta[:, k + j, None] * logx[None, :, j] for j in range(k)]  # k × [S, n]
    ze = theta[:, 2 * k, None]  # [S, 1]
    zmax = ze
    for z in zs:
        zmax = np.maximum(zmax, z)
    ezs = [np.exp(z - zmax) for z in zs]
    eze = np.exp(ze - zmax)
    total = eze + sum(ezs)
    r = zmax + np.log(total) - logy[None]  # [S, n]
    if math.isfinite(delta):
        ar = np.abs(r)
        hub = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
        psi = np.clip(r, -delta, delta)
    else:
        hub, psi = 0.5 * r * r, r
    if weights is not None:
        hub, psi = hub * weights, psi * weights
    f = hub.sum(axis=1)
    q = psi / total  # ψ pⱼ = q e^{zⱼ − max}
    grads = [None] * (2 * k + 1)
    for j in range(k):
        qj = q * ezs[j]
        grads[j] = qj.sum(axis=1)
        grads[k + j] = -(qj @ logx[:, j])
    grads[2 * k] = (q * eze).sum(axis=1)
    return f, np.stack(grads, axis=1)


def _polish(
    theta0: np.ndarray, logx: np.ndarray, logy: np.ndarray, delta: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Finish one start with scipy's L-BFGS-B (tight tolerances, analytic gradient)."""
    from scipy.optimize import minimize

    w = None if weights is None else weights[None]

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = _objective(th[None], logx, logy, w, delta)
        return float(f[0]), g[0]

    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20000, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-12},
    )
    return res.x, float(res.fun)


def _multistart(
    starts: np.ndarray, logx: np.ndarray, logy: np.ndarray, *, delta: float, polish: int = 8
) -> np.ndarray:
    """Run every start (rows of θ) in the batched L-BFGS, polish the best `polish` end points with
    scipy, and return the θ with the lowest objective."""
    x, f = lbfgs_batched(lambda th, idx: _objective(th, logx, logy, None, delta), starts)
    f = np.where(np.isfinite(f), f, np.inf)
    best = []
    for i in np.argsort(f)[:polish]:
        best.append(_polish(x[i], logx, logy, delta))
    return min(best, key=lambda tf: tf[1])[0]


def chinchilla_grid(grid: str | dict = "published") -> np.ndarray:
    """Starting points θ = (a, b, α, β, e) as rows.

    "published": Besiroglu et al.'s 4,500-start grid (PUBLISHED_GRID). "small": the 108-start
    subset a, b ∈ {0, 5, 10}, α, β ∈ {0.5, 1}, e ∈ {−1, 0, 1} (every value is on the published
    grid), used by the fast tests. Or a dict with the same keys as PUBLISHED_GRID.
    """
    if grid == "published":
        g = PUBLISHED_GRID
    elif grid == "small":
        g = {
            "a": [0.0, 5.0, 10.0],
            "b": [0.0, 5.0, 10.0],
            "alpha": [0.5, 1.0],
            "beta": [0.5, 1.0],
            "e": [-1.0, 0.0, 1.0],
        }
    elif isinstance(grid, dict):
        g = grid
    else:
        raise UserError(f"unknown start grid {grid!r}; use 'published' or 'small'")
    return np.array(list(itertools.product(g["a"], g["b"], g["alpha"], g["beta"], g["e"])), dtype=np.float64)


def fit_chinchilla(
    params: ArrayLike,
    tokens: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    grid: str | dict = "published",
    bootstrap: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    n_kind: str = "unspecified",
) -> dict:
    """Chinchilla approach 3: fit L(N, D) = E + A/N^α + B/D^β (Huber on log L, see module doc).

    Returns {"form": "chinchilla", "N", "E", "A", "B", "alpha", "beta", "a", "b", "e", "objective",
    "a_opt" (= β/(α+β), N_opt ∝ C^a_opt), "b_opt" (= α/(α+β)), "n_points"}; with `bootstrap` = B > 0
    also "intervals": {name: [lo, hi]} (percentile intervals at level `ci` over B resamples of the
    points, each refitted from the full-data optimum).
    """
    n = _as_positive("params", params)
    d = _as_positive("tokens", tokens)
    y = _as_positive("loss", loss)
    if not n.size == d.size == y.size:
        raise UserError("params, tokens and loss have different lengths")
    _check_count(n.size, 5, "Chinchilla fit L(N, D) = E + A/N^α + B/D^β")
    logx = np.stack([np.log(n), np.log(d)], axis=1)
    logy = np.log(y)
    starts = chinchilla_grid(grid)
    # our θ order is (a, b, α, β, e): c₁ = a, c₂ = b, α₁ = α, α₂ = β
    theta = _multistart(starts, logx, logy, delta=delta)
    f, _ = _objective(theta[None], logx, logy, None, delta)
    out = _theta_to_dict(theta)
    out.update(
        {
            "form": "chinchilla",
            "N": n_kind,
            "objective": float(f[0]),
            "delta": delta,
            "n_points": int(n.size),
            "starts": int(starts.shape[0]),
        }
    )
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(n.size, np.full(n.size, 1.0 / n.size), size=bootstrap).astype(np.float64)
        # tight tolerances: each resample starts at the full-data optimum, where scipy's default
        # rule (an absolute decrease of 2e-9 on an objective of order 1e-3) would stop at once
        x, _ = lbfgs_batched(
            lambda th, idx: _objective(th, logx, logy, weights[idx], delta),
            np.repeat(theta[None], bootstrap, axis=0),
            ftol=1e-15,
            gtol=1e-12,
            max_iter=3000,
        )
        samples = [_theta_to_dict(th) for th in x]
        lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
        out["intervals"] = {
            k: [
                float(np.percentile([s[k] for s in samples], lo)),
                float(np.percentile([s[k] for s in samples], hi)),
            ]
            for k in ("E", "A", "B", "alpha", "beta", "a_opt", "b_opt")
        }
        out["bootstrap"] = {"resamples": bootstrap, "ci": ci, "seed": seed}
    return out


def _theta_to_dict(theta: np.ndarray) -> dict:
    a, b, alpha, beta, e = (float(v) for v in theta)
    return {
        "E": math.exp(e),
        "A": math.exp(a),
        "B": math.exp(b),
        "alpha": alpha,
        "beta": beta,
        "a": a,
        "b": b,
        "e": e,
        "a_opt": beta / (alpha + beta),
        "b_opt": alpha / (alpha + beta),
    }
