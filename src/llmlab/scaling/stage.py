"""The speedrun's scaling stage (off unless `speedrun.scaling = true`) and its report section.

A mini-sweep of small pretraining runs as the spec file says (its own data, tokenizer and shapes),
Chinchilla approach 3, L(N, D) = E + A/N^α + B/D^β, fitted to it; approach 2 when the sweep has
IsoFLOP profiles; when the spec names a held-out run, its forecast against its measured loss; and
every finished run on the held-out ICL tasks (`llmlab.scaling.abilities`: exact match and answer
log-probability against compute, with the recipe's speedrun.eval_tasks, shots and eval_limit).
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
    res["abilities"] = _abilities(ctx, out)
    res["outputs"].append(res["abilities"]["json"])
    rel = fc.get("rel_error")
    fc_note = f", forecast error {100 * rel:+.1f}%" if rel is not None else ""
    res["summary"] = (
        f"{res['runs']} runs, α={fmt.num(fit.get('alpha'), '.2f')}, β={fmt.num(fit.get('beta'), '.2f')}{fc_note}"
    )
    return res


def _abilities(ctx: StageContext, out: Path) -> dict:
    """Every finished sweep run (the forecast run included) on the recipe's ICL tasks."""
    from llmlab.scaling.abilities import abilities

    sp = ctx.recipe.speedrun
    ab = abilities(
        out / "sweep",
        tasks=list(sp.eval_tasks) or None,
        shots=sp.shots,
        limit=sp.eval_limit,
        seed=sp.seed,
        device=ctx.recipe.train.device,
        out_dir=out / "abilities",
        progress=ctx.verbose,
    )
    return {
        "rows": ab["rows"],
        "fits": ab["fits"],
        "json": ctx.rel(ab["json"]),
        "plots": [ctx.rel(p) for p in ab["plots"]],
    }


def _span(rows: list[dict], key: str, spec: str) -> str:
    """`first → last` of a metric over runs in compute order."""
    return f"{format(rows[0][key], spec)} → {format(rows[-1][key], spec)}" if rows else "n/a"


def abilities_section(ab: dict, ctx) -> list[Block]:
    """The abilities table (smallest → largest sweep run per task and k), the forecast of the
    held-out run, and one figure per task."""
    rows, fits = ab.get("rows") or [], ab.get("fits") or []
    if not rows:
        return []
    fit_of = {(f["task"], f["k"]): f for f in fits}
    table, forecasts = [], []
    for (task, k), f in fit_of.items():
        runs = sorted(
            (r for r in rows if r["task"] == task and r["k"] == k and not r["heldout"]),
            key=lambda r: r["flops"],
        )
        alpha = fmt.num(f["alpha"], ".3f") if f.get("alpha") is not None else "no fit"
        table.append(
            [
                task,
                k,
                _span(runs, "acc", ".2f"),
                _span(runs, "p_answer", ".2g"),
                _span(runs, "answer_loss", ".3f"),
                alpha,
            ]
        )
        fc = f.get("forecast")
        if fc:
            forecasts.append(
                [
                    task,
                    k,
                    fc["predicted_loss"],
                    fc["measured_loss"],
                    f"{100 * fc['rel_error']:+.1f}%",
                    fc["predicted_acc"],
                    fc["measured_acc"],
                ]
            )
    n_models = len({r["model"] for r in rows})
    blocks: list[Block] = [
        Heading("Abilities across scale", 3),
        Para(
            f"The {n_models} finished runs on held-out in-context tasks, smallest → largest sweep run by compute: "
            "exact match / accuracy (the discontinuous metric that makes abilities look emergent, Wei et al. 2022), "
            "p(answer) = exp Σⱼ log p(aⱼ | prompt, a₍<ⱼ₎) and the answer loss −Σ log p / answer tokens (continuous "
            "metrics, Schaeffer et al. 2023), and the power law L(C) = (C_c/C)^α fitted to the answer loss of the "
            f"best run per budget. Every row (model, task, k) is in {ab.get('json')}."
        ),
        Table(["task", "k", "exact match / accuracy", "p(answer)", "answer loss (nats/token)", "α"], table),
    ]
    if forecasts:
        blocks += [
            Para(
                "Forecast of the held-out run from the answer-loss fit; exact match (generation tasks) "
                "predicted as exp(−L̂ · answer tokens):"
            ),
            Table(
                [
                    "task",
                    "k",
                    "predicted loss",
                    "measured loss",
                    "relative error",
                    "predicted exact match",
                    "measured exact match / accuracy",
                ],
                forecasts,
            ),
        ]
    return blocks + [
        Figure(ctx.path(p), f"abilities: {Path(p).stem.removeprefix('abilities_')}")
        for p in ab.get("plots", [])
        if ctx.path(p).exists()
    ]


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
    return blocks + abilities_section(r.get("abilities") or {}, ctx)


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
    reads=(
        "speedrun.scaling_spec",
        "speedrun.eval_tasks",
        "speedrun.shots",
        "speedrun.eval_limit",
        "speedrun.seed",
    ),
    files=("speedrun.scaling_spec",),
    enabled=lambda recipe: recipe.speedrun.scaling,
)
