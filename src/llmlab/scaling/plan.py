"""Compute-optimal allocation: how to split a FLOP budget C between parameters N and tokens D.

From a Chinchilla approach-3 fit L(N, D) = E + A/N^α + B/D^β under C = 6ND (closed form, from
setting ∂L/∂N = 0 along D = C / 6N, i.e. αA/N^α = βB/D^β):

    N_opt(C) = G · (C/6)^a,   D_opt(C) = G⁻¹ · (C/6)^b,   G = (αA / (βB))^{1/(α+β)},
    a = β / (α + β),  b = α / (α + β)

From an approach-2 (IsoFLOP) fit: N_opt = k_N · C^a and D_opt = k_D · C^b, as fitted.
Tokens per parameter at the budget: D_opt / N_opt.
"""

from __future__ import annotations

import numpy as np

from llmlab.errors import UserError
from llmlab.scaling.predict import fit_form, predict_loss

# Published Chinchilla numbers, for comparison lines in plots and reports.
HOFFMANN_2022 = {
    "form": "chinchilla",
    "N": "total",
    "E": 1.69,
    "A": 406.4,
    "B": 410.7,
    "alpha": 0.34,
    "beta": 0.28,
    "source": "Hoffmann et al. 2022, approach 3 as printed",
}
BESIROGLU_2024 = {
    "form": "chinchilla",
    "N": "total",
    "E": 1.8172,
    "A": 477.8,
    "B": 2143.0,
    "alpha": 0.3473,
    "beta": 0.3672,
    "source": "Besiroglu et al. 2024 (Epoch AI) re-fit, Huber grid",
}
# Hoffmann et al. 2022, Table 3 (approach 1 projections): (params, FLOPs, tokens).
HOFFMANN_TABLE3 = [
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]
# Hoffmann et al. 2022, Table 2: exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b) by approach.
HOFFMANN_EXPONENTS = {"approach 1": (0.50, 0.50), "approach 2": (0.49, 0.51), "approach 3": (0.46, 0.54)}


def compute_optimal(fit: dict, flops: float | np.ndarray) -> dict:
    """N_opt, D_opt, tokens per parameter (and the predicted loss, for a Chinchilla fit) at budget C.

    Returns {"flops", "params", "tokens", "tokens_per_param", "loss", "N", "a", "b"}: floats for a
    scalar budget, arrays for an array of budgets. "N" repeats which parameter count the fit used.
    A fit without a "form" key gets the form its keys say (`fit_form`), e.g. a law typed by hand:
    compute_optimal({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}, 5.76e23).
    """
    c = np.asarray(flops, dtype=np.float64)
    if np.any(~np.isfinite(c) | (c <= 0)):
        raise UserError(f"flops must be positive, got {flops!r}")
    form = fit_form(fit)
    if form == "chinchilla":
        for k in ("E", "A", "B", "alpha", "beta"):
            if k not in fit:
                raise UserError(f"fit: missing key '{k}' for a chinchilla fit")
        alpha, beta = fit["alpha"], fit["beta"]
        if alpha <= 0 or beta <= 0:
            raise UserError(f"fit: α = {alpha:.3g}, β = {beta:.3g}; a compute-optimal split needs both > 0")
        g = (alpha * fit["A"] / (beta * fit["B"])) ** (1.0 / (alpha + beta))
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
        n = g * (c / 6.0) ** a
        d = (c / 6.0) ** b / g
        loss = predict_loss({**fit, "form": form}, n, d)
    elif form == "isoflop":
        a, b = fit["a"], fit["b"]
        n = fit["k_N"] * c**a
        d = fit["k_D"] * c**b
        loss = np.full_like(c, np.nan)
    elif form == "kaplan":
        raise UserError(
            "a Kaplan fit of one variable cannot split compute between N and D; fit --form chinchilla "
            "or --form isoflop"
        )
    else:
        raise UserError(f"fit: unknown form {form!r}; expected chinchilla or isoflop")
    out = {"flops": c, "params": n, "tokens": d, "tokens_per_param": d / n, "loss": np.asarray(loss)}
    if c.ndim == 0:
        out = {k: float(v) for k, v in out.items()}
    out.update({"N": fit.get("N", "unspecified"), "a": float(a), "b": float(b)})
    return out


def tokens_per_param(fit: dict, flops: float) -> float:
    """D_opt / N_opt at budget C."""
    return float(compute_optimal(fit, flops)["tokens_per_param"])
