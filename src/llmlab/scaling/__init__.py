"""Scaling laws: FLOP accounting, sweeps of pretraining runs, fits, compute-optimal plans, forecasts.

from llmlab.scaling import fit_chinchilla, compute_optimal
fit = fit_chinchilla(params, tokens, loss)          # {"E", "A", "B", "alpha", "beta", ...}
compute_optimal(fit, 1e15)                          # {"params", "tokens", "tokens_per_param", ...}

from llmlab.scaling import run_sweep, forecast       # run_sweep("recipes/scaling/cpu-mini.toml", "runs/sc")
"""

from llmlab.scaling.fit import fit_chinchilla, fit_isoflop, fit_kaplan
from llmlab.scaling.forecast import forecast
from llmlab.scaling.plan import compute_optimal, tokens_per_param
from llmlab.scaling.predict import predict_loss
from llmlab.scaling.sweep import run_sweep
from llmlab.scaling.sweep_plan import load_spec

__all__ = [
    "compute_optimal",
    "fit_chinchilla",
    "fit_isoflop",
    "fit_kaplan",
    "forecast",
    "load_spec",
    "predict_loss",
    "run_sweep",
    "tokens_per_param",
]
