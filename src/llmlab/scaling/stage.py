"""The speedrun's scaling stage (off unless `speedrun.scaling = true`) and its report section.

A mini-sweep of small pretraining runs as the spec file says (its own data, tokenizer and shapes),
Chinchilla approach 3, L(N, D) = E + A/N^α + B/D^β, fitted to it; approach 2 when the sweep has
IsoFLOP profiles; and, when the spec names a held-out run, its forecast against its measured loss.
The sweep skips its finished runs, so a rerun is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Figure, Heading, Para, Table


def run(ctx: StageContext) -> dict:
    from llmlab.scaling import compute_optimal, fit_chinchilla, fit_isoflop, forecast, load_spec, run_sweep
    from llmlab.scaling.plot import plot_all
    from llmlab.scaling.sweep import read_results

    out = ctx.dir("scaling")
    spec = load_spec(ctx.recipe.speedrun.scaling_spec)
    res: dict[str, Any] = {"spec": ctx.recipe.speedrun.scaling_spec}
    fit = None
    if spec.sweep.forecast.depth:
        res["forecast"] = forecast(spec, out / "sweep", progress=ctx.verbose, verbose=ctx.verbose)
        fit = res["forecast"].pop("fit")
    else:
        run_sweep(spec, out / "sweep", progress=ctx.verbose)
    csv = out / "sweep" / "results.csv"
    data = read_results(csv)
    if fit is None:
        fit = fit_chinchilla(data["params"], data["tokens"], data["loss"], n_kind=data["params_kind"])
    try:
        iso = fit_isoflop(
            data["params"], data["tokens"], data["loss"], flops=data["flops"], n_kind=data["params_kind"]
        )
    except UserError:  # no IsoFLOP profile with enough runs: approach 3 alone
        iso = None
    fc = res.get("forecast", {})
    res.update(
        runs=len(data["loss"]),
        csv=ctx.rel(csv),
        fit=fit,
        isoflop=iso,
        optimal_at_100x=compute_optimal(fit, 100 * float(data["flops"].max())),
        flops=float(data["flops"].sum()) + float(fc.get("flops", 0.0)),  # 6ND per run
        tokens=int(data["tokens"].sum()) + int(fc.get("tokens", 0)),
        outputs=[ctx.rel(csv)],
    )
    res["plots"] = [ctx.rel(p) for p in plot_all(data, out / "plots", chin_fit=fit, iso_fit=iso)]
    rel = fc.get("rel_error")
    fc_note = f", forecast error {100 * rel:+.1f}%" if rel is not None else ""
    res["summary"] = (
        f"{res['runs']} runs, α={fmt.num(fit.get('alpha'), '.2f')}, β={fmt.num(fit.get('beta'), '.2f')}{fc_note}"
    )
    return res


def section(r: dict, ctx) -> list[Block]:
    fit = r.get("fit") or {}
    blocks: list[Block] = [
        Heading("Scaling mini-sweep"),
        Para(
            f"{r.get('runs')} finished pretraining runs from {r.get('spec')}. Chinchilla approach 3 fits "
            f"L(N, D) = E + A/N^α + B/D^β (Huber loss on log L; N = {fit.get('N', 'n/a')} parameters); "
            "compute-optimal allocation for C ≈ 6ND: N_opt ∝ C^(β/(α+β)), D_opt ∝ C^(α/(α+β))."
        ),
        Table(
            ["E", "A", "B", "α", "β", "N_opt exponent a", "D_opt exponent b"],
            [[fit.get(k) for k in ("E", "A", "B", "alpha", "beta", "a_opt", "b_opt")]],
        ),
    ]
    iso = r.get("isoflop") or {}
    if iso.get("a") is not None:
        blocks.append(
            Para(f"Approach 2 (IsoFLOP parabolas): N_opt ∝ C^{iso['a']:.3f}, D_opt ∝ C^{iso['b']:.3f}.")
        )
    opt = r.get("optimal_at_100x") or {}
    if opt:
        blocks += [
            Para("Fitted compute-optimal model at 100× the sweep's largest budget:"),
            Table(
                ["FLOPs C", "N_opt", "D_opt", "tokens per parameter", "predicted loss"],
                [
                    [
                        fmt.sci(opt.get("flops")),
                        fmt.count(round(opt.get("params") or 0)),
                        fmt.count(round(opt.get("tokens") or 0)),
                        opt.get("tokens_per_param"),
                        opt.get("loss"),
                    ]
                ],
            ),
        ]
    fc = r.get("forecast") or {}
    if fc.get("predicted") is not None:
        rel = fc.get("rel_error")
        blocks += [
            Para("Forecast: fitted on the sweep, then the larger held-out run trained afterwards:"),
            Table(
                ["run", "N", "D", "FLOPs", "predicted loss", "measured loss", "relative error"],
                [
                    [
                        fc.get("name"),
                        fmt.count(fc.get("params")),
                        fmt.count(fc.get("tokens")),
                        fmt.sci(fc.get("flops")),
                        fc.get("predicted"),
                        fc.get("measured"),
                        f"{100 * rel:+.2f}%" if isinstance(rel, int | float) else "n/a",
                    ]
                ],
            ),
        ]
    blocks += [
        Figure(ctx.path(p), f"scaling: {Path(p).stem}") for p in r.get("plots", []) if ctx.path(p).exists()
    ]
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    fit, fc = r.get("fit") or {}, r.get("forecast") or {}
    lines = [
        [
            "fitted exponents α, β",
            f"{fmt.num(fit.get('alpha'), '.2f')}, {fmt.num(fit.get('beta'), '.2f')}",
            "Chinchilla 0.34, 0.28",
        ]
    ]
    if fc.get("predicted") is not None:
        lines.append(
            [
                "forecast of the held-out run's loss",
                fmt.num(fc.get("predicted")),
                f"measured {fmt.num(fc.get('measured'))}",
            ]
        )
    return lines


SCALING = Stage(
    "scaling",
    "scaling mini-sweep, Chinchilla fit and forecast (speedrun.scaling=true)",
    run,
    section=section,
    headline=headline,
    reads=("speedrun.scaling_spec",),
    files=("speedrun.scaling_spec",),
    enabled=lambda recipe: recipe.speedrun.scaling,
)
