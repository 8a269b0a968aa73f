"""Forecast: fit a scaling law on a sweep's small runs, predict a larger held-out run, train it,
and compare.

    predicted = Ê + Â / N^α̂ + B̂ / D^β̂        (Chinchilla approach 3 on the sweep's CSV)
    error     = measured − predicted,  relative error = error / measured

The held-out run is [sweep.forecast] in the spec (a depth and a FLOP or token budget); it is an
ordinary finished run like every sweep point, trained after the fit so the prediction is made
before the answer exists (forecast.json records both).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from llmlab.io import atomic_write_json
from llmlab.scaling.fit import fit_chinchilla
from llmlab.scaling.predict import predict_loss
from llmlab.scaling.sweep import execute, prepare_data, read_results, run_sweep
from llmlab.scaling.sweep_plan import SweepSpec, forecast_run, load_spec


def forecast(
    spec: SweepSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    grid: str = "published",
    progress: bool = True,
    overrides: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or reuse) the sweep, fit approach 3 on it, predict the held-out run's validation loss,
    train the held-out run, and return {"name", "params", "tokens", "flops", "predicted", "measured",
    "error", "rel_error", "fit"}; also written to `<out_dir>/forecast.json`."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, overrides)
    out = Path(out_dir)
    csv_path = run_sweep(spec, out, progress=progress)
    data = read_results(csv_path)
    fit = fit_chinchilla(data["params"], data["tokens"], data["loss"], grid=grid, n_kind=data["params_kind"])
    target = forecast_run(prepare_data(spec, out))  # the sweep's pinned tokenizer
    predicted = float(predict_loss(fit, target.params, target.tokens))
    flops = 6.0 * target.params * target.tokens
    result: dict[str, Any] = {
        "name": target.name,
        "params": target.params,
        "tokens": target.tokens,
        "flops": flops,
        "N": spec.sweep.count,
        "predicted": predicted,
        "largest_sweep_flops": float(data["flops"].max()),
        "fit": fit,
    }
    atomic_write_json(out / "forecast.json", result)  # the prediction is on disk before the run
    if verbose:
        print(
            f"forecast: {target.name} (N = {target.params:,}, D = {target.tokens:,}, C = {flops:.3g}): "
            f"predicted loss {predicted:.4f}; training it ...",
            file=sys.stderr,
        )
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(spec.sweep.threads)
    try:
        row = execute(target, out, spec.sweep.count)
    finally:
        torch.set_num_threads(before)
    measured = float(row["loss"])
    result.update(
        measured=measured,
        error=measured - predicted,
        rel_error=(measured - predicted) / measured,
        wall_s=row["wall_s"],
    )
    atomic_write_json(out / "forecast.json", result)
    return result
