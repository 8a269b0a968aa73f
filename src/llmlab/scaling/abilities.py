"""Emergent abilities across scale: every finished run of a sweep on held-out in-context tasks, scored
with a discontinuous metric and a continuous one, against training compute.

Wei et al. (2022) call an ability emergent when it is absent (near chance) in smaller models and
present in larger ones, plotted as task accuracy against training FLOPs on a log axis. Schaeffer et
al. (2023) argue that many such jumps come from the metric: exact match on an answer of ℓ tokens
behaves like p^ℓ in the per-token probability p, so a smooth gain in p looks like a sudden jump in
accuracy. Both are measured here, for each run (model), task and k (the number of shots):

    acc          exact match (generation) or accuracy (multiple choice), as `llmlab.eval.icl.evaluate`
                 scores it: the discontinuous metric
    logp         (1/n) Σᵢ Σⱼ log p(aᵢⱼ | xᵢ, aᵢ,<ⱼ): the mean log-probability of the whole correct
                 answer aᵢ (terminator included) after the k-shot prompt xᵢ, in nats
    p_answer     (1/n) Σᵢ exp(Σⱼ log p(aᵢⱼ | ...)): the probability of writing the answer, i.e. the
                 exact match a sampling model expects
    answer_loss  −Σᵢ Σⱼ log p(aᵢⱼ | ...) / Σᵢ ℓᵢ: nats per answer token, the continuous metric

Fit and forecast, per (task, k) where they apply: on the sweep's runs (not the held-out forecast
run), the lowest answer loss of each compute budget, a power law like the pretraining frontier's,

    L(C) = (C_c / C)^α                   (`fit_kaplan`, least squares on log L)

then at the held-out run's compute C*: L̂ = (C_c / C*)^α, and the exact match it implies if every
answer token had that loss, â = exp(−L̂ · ℓ̄) (ℓ̄ = mean answer length in tokens; generation tasks
only: a multiple-choice argmax has no such link to the loss), both checked against what the
held-out run measures.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.errors import UserError
from llmlab.io import atomic_write_json, read_json

DEFAULT_SHOTS = (0, 1, 4)  # the speedrun's default k for base-model evals


@dataclass(frozen=True)
class SweepModel:
    """One finished run of a sweep directory."""

    name: str
    path: Path
    params: float  # N as the sweep counts it (its `count`)
    tokens: float  # D trained
    flops: float  # C = 6ND
    heldout: bool  # the forecast run: evaluated and plotted, never fitted


def _finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() and (run_dir / "config.json").is_file()


def finished_runs(sweep_dir: str | os.PathLike) -> list[SweepModel]:
    """The finished runs of a sweep folder, smallest compute first: the rows of results.csv whose
    folder holds summary.json, plus the held-out run of forecast.json once it has trained."""
    from llmlab.scaling.sweep import read_results

    root = Path(sweep_dir)
    if not root.is_dir():
        raise UserError(f"--sweep {root}: no such folder")
    runs = []
    if (root / "results.csv").is_file():
        data = read_results(root / "results.csv")
        for i, name in enumerate(data["names"]):
            if _finished(root / name):
                runs.append(
                    SweepModel(
                        name, root / name, *(float(data[c][i]) for c in ("params", "tokens", "flops")), False
                    )
                )
    if (root / "forecast.json").is_file():
        fc = read_json(root / "forecast.json", "forecast file")
        keys = ("name", "params", "tokens", "flops")
        if not (isinstance(fc, dict) and all(k in fc for k in keys)):
            raise UserError(
                f"{root / 'forecast.json'}: expected the keys {', '.join(keys)} (as `scaling forecast` writes)"
            )
        name = str(fc["name"])
        if _finished(root / name) and name not in {r.name for r in runs}:
            runs.append(SweepModel(name, root / name, *(float(fc[k]) for k in keys[1:]), True))
    if not runs:
        raise UserError(
            f"--sweep {root}: no finished runs (expected results.csv and run folders with summary.json; "
            "run `llmlab scaling sweep` first)"
        )
    return sorted(runs, key=lambda r: r.flops)


def resolve_tasks(names: list[str] | tuple[str, ...] | None) -> list:
    """Task objects for `names` (built-in names or .jsonl files; None or [] = every built-in task)."""
    from llmlab.eval.tasks import get_task, task_names

    return [get_task(n) for n in (names or task_names())]


def continuous_metrics(scored: list[tuple[float, int]]) -> dict[str, float]:
    """logp, p_answer, answer_loss and answer_tokens (mean ℓ) from [(Σⱼ log p, ℓ) per item]."""
    logps = np.array([s for s, _ in scored], dtype=float)
    lengths = np.array([n for _, n in scored], dtype=float)
    return {
        "logp": float(logps.mean()),
        "p_answer": float(np.exp(logps).mean()),
        "answer_loss": float(-logps.sum() / lengths.sum()),
        "answer_tokens": float(lengths.mean()),
    }


def evaluate_model(model, tok, tasks: list, shots, limit: int | None = None, seed: int = 0) -> list[dict]:
    """One row per (task, k) for one model: {"task", "kind", "k", "n", "acc", "chance", "logp",
    "p_answer", "answer_loss", "answer_tokens"}."""
    from llmlab.eval.icl import answer_logprobs, evaluate

    rows = []
    for task in tasks:
        r = evaluate(model, tok, task, shots=list(shots), limit=limit, seed=seed)
        for k, acc in zip(r["shots"], r["acc"]):
            scored = answer_logprobs(model, tok, task, k, n=r["n"], seed=seed)
            base = {"task": task.name, "kind": task.kind, "k": k, "n": r["n"], "acc": float(acc)}
            rows.append({**base, "chance": r.get("chance"), **continuous_metrics(scored)})
    return rows


def ability_table(
    runs: list[SweepModel],
    tasks: list,
    shots=DEFAULT_SHOTS,
    limit: int | None = 100,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict]:
    """One row per (model, task, k): the run's name, params, tokens, flops and heldout beside
    `evaluate_model`'s metrics."""
    import llmlab
    from llmlab.io import progress as progress_bar

    rows = []
    for run in progress_bar(runs, desc="abilities", unit="model", disable=None if progress else True):
        model, tok = llmlab.load(run.path, device=device)
        model.eval()
        info = {"model": run.name, "params": run.params, "tokens": run.tokens, "flops": run.flops}
        rows += [
            {**info, "heldout": run.heldout, **r}
            for r in evaluate_model(model, tok, tasks, shots, limit, seed)
        ]
    return rows


def per_budget(flops: np.ndarray, values: np.ndarray, best=np.argmin) -> tuple[np.ndarray, np.ndarray]:
    """(C, value) of the best run of each compute budget (runs within 10% of each other share one,
    as in `group_budgets`), sorted by C."""
    from llmlab.scaling.fit import group_budgets

    labels = group_budgets(flops)
    idx = [np.flatnonzero(labels == g)[best(values[labels == g])] for g in range(labels.max() + 1)]
    idx = sorted(idx, key=lambda i: flops[i])
    return flops[idx], values[idx]


def _groups(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["task"], r["k"]), []).append(r)
    return out


def fit_task(rows: list[dict]) -> dict[str, Any]:
    """The power law L(C) = (C_c/C)^α of one (task, k)'s answer loss on the sweep runs (the best of
    each budget), and its forecast of the held-out run when there is one. Without a fit (fewer than
    two budgets), "why" says so."""
    from llmlab.scaling.fit import fit_kaplan

    sweep = [r for r in rows if not r["heldout"]]
    out: dict[str, Any] = {"task": rows[0]["task"], "k": rows[0]["k"], "alpha": None, "A": None}
    if not sweep:
        return {**out, "why": "no finished sweep run besides the held-out one"}
    c, loss = per_budget(np.array([r["flops"] for r in sweep]), np.array([r["answer_loss"] for r in sweep]))
    try:
        fit = fit_kaplan(c, loss, variable="flops")
    except UserError as e:
        return {**out, "why": str(e)}
    # L = A / C^α with A = C_c^α (C_c overflows to inf when α ≈ 0, so it is not kept)
    out.update(alpha=fit["alpha"], A=fit["A"], rmse_log=fit["rmse_log"], points=int(c.size))
    held = [r for r in rows if r["heldout"]]
    if held:
        h = held[0]
        predicted = float(fit["A"] / h["flops"] ** fit["alpha"])  # (C_c/C)^α = A / C^α
        out["forecast"] = {
            "model": h["model"],
            "flops": h["flops"],
            "predicted_loss": predicted,
            "measured_loss": h["answer_loss"],
            "rel_error": (h["answer_loss"] - predicted) / h["answer_loss"],
            # p^ℓ is exact match's link to the per-token loss; a multiple-choice argmax has no such link
            "predicted_acc": math.exp(-predicted * h["answer_tokens"]) if h["kind"] == "gen" else None,
            "measured_acc": h["acc"],
            "measured_p_answer": h["p_answer"],
        }
    return out


def fit_abilities(rows: list[dict]) -> list[dict]:
    """`fit_task` for every (task, k) of the table."""
    return [fit_task(g) for g in _groups(rows).values()]


def _file_name(task: str) -> str:
    return "abilities_" + re.sub(r"[^\w.-]", "_", task) + ".png"


def _sci_label(x: float, _pos=None) -> str:
    """5e7 → 5×10⁷ (mathtext), 1e8 → 10⁸."""
    e = math.floor(math.log10(x) + 1e-9)
    m = round(x / 10**e)
    return f"$10^{{{e}}}$" if m == 1 else f"${m}\\times10^{{{e}}}$"


def plot_task(rows: list[dict], fits: list[dict], path: str | os.PathLike) -> Path:
    """One task: exact match / accuracy (left) and answer loss (middle, with the power law and the
    forecast) against training FLOPs, and accuracy against parameters (right), on log axes, a colour
    per k; the held-out run as a star."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from llmlab.report.plots import pyplot, save_png
    from llmlab.scaling.plot import _plain_log_ticks

    plt = pyplot()
    fig, (acc_ax, loss_ax, size_ax) = plt.subplots(1, 3, figsize=(17, 4.6))
    groups = _groups(rows)
    cmap = plt.get_cmap("viridis")
    fit_of = {(f["task"], f["k"]): f for f in fits}
    for j, ((task, k), g) in enumerate(sorted(groups.items(), key=lambda kv: kv[0][1])):
        color = cmap(0.1 + 0.75 * j / max(1, len(groups) - 1))
        sweep = [r for r in g if not r["heldout"]]
        flops = np.array([r["flops"] for r in sweep])
        for ax, key, best in ((acc_ax, "acc", np.argmax), (loss_ax, "answer_loss", np.argmin)):
            values = np.array([r[key] for r in sweep])
            ax.plot(flops, values, "o", color=color, ms=5, alpha=0.6)
            ax.plot(*per_budget(flops, values, best), "-", color=color, lw=1.5, label=f"k = {k}")
            for h in (r for r in g if r["heldout"]):
                ax.plot(h["flops"], h[key], "*", color=color, ms=14, mec="black", mew=0.8)
        params, acc = np.array([r["params"] for r in sweep]), np.array([r["acc"] for r in sweep])
        sizes = np.unique(params)
        size_ax.plot(params, acc, "o", color=color, ms=5, alpha=0.6)
        size_ax.plot(
            sizes, [acc[params == n].max() for n in sizes], "-", color=color, lw=1.5, label=f"k = {k}"
        )
        for h in (r for r in g if r["heldout"]):
            size_ax.plot(h["params"], h["acc"], "*", color=color, ms=14, mec="black", mew=0.8)
        fit = fit_of.get((task, k), {})
        if fit.get("alpha") is not None:
            top = max([r["flops"] for r in g])
            grid = np.logspace(np.log10(flops.min()), np.log10(top), 100)
            loss_ax.plot(
                grid,
                fit["A"] / grid ** fit["alpha"],
                "--",
                color=color,
                lw=1,
                label=f"fit, α = {fit['alpha']:.3g}",
            )
            if "forecast" in fit:
                fc = fit["forecast"]
                loss_ax.plot(fc["flops"], fc["predicted_loss"], "x", color=color, ms=10, mew=2)
    chance = next((r["chance"] for r in rows if r.get("chance") is not None), None)
    if chance is not None:
        for ax in (acc_ax, size_ax):
            ax.axhline(chance, ls=":", color="gray", label=f"chance {chance:.2f}")
    if any(r["heldout"] for r in rows):
        acc_ax.plot([], [], "*", color="gray", ms=12, mec="black", label="held-out run")
        loss_ax.plot([], [], "x", color="gray", ms=9, mew=2, label="forecast")
    for ax in (acc_ax, size_ax):
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("exact match" if rows[0]["kind"] == "gen" else "accuracy (multiple choice)")
    acc_ax.set_title("discontinuous metric")
    size_ax.set_title("against model size (best run of each size)")
    loss_ax.set_yscale("log")
    _plain_log_ticks(loss_ax)
    loss_ax.set_ylabel("answer loss −log p per answer token (nats)")
    loss_ax.set_title("continuous metric")
    for ax in (acc_ax, loss_ax, size_ax):
        ax.set_xscale("log")
        # a sweep spans a decade or two: label 1, 2 and 5 of each decade, not colliding minor ticks
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_sci_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters N" if ax is size_ax else "training compute C = 6ND (FLOPs)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        f"{rows[0]['task']}: one model per point, lines through the best run of each budget", fontsize=11
    )
    return save_png(fig, Path(path), dpi=130, tight=True)


def plot_abilities(rows: list[dict], fits: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """`plot_task` for every task: `<out_dir>/abilities_<task>.png`."""
    tasks = dict.fromkeys(r["task"] for r in rows)
    return [
        plot_task([r for r in rows if r["task"] == t], fits, Path(out_dir) / _file_name(t)) for t in tasks
    ]


def abilities(
    sweep_dir: str | os.PathLike,
    tasks: list[str] | None = None,
    shots=DEFAULT_SHOTS,
    limit: int | None = 100,
    seed: int = 0,
    device: str = "cpu",
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate every finished run of `sweep_dir` on `tasks` (default: every built-in task) at each
    k of `shots` on the first `limit` test items, fit and forecast the answer loss, draw one PNG per
    task. Returns {"rows", "fits", "plots", "json"}; the same (less the paths) goes to
    `<out_dir>/abilities.json` (out_dir defaults to `<sweep_dir>/abilities`)."""
    from llmlab.train.distributed import resolve_device

    task_objs = resolve_tasks(tasks)  # an unknown task fails before any model loads
    runs = finished_runs(sweep_dir)
    dev = resolve_device(device, what="--device")
    rows = ability_table(runs, task_objs, shots, limit, seed, str(dev), progress)
    fits = fit_abilities(rows)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "abilities"
    atomic_write_json(out / "abilities.json", {"rows": rows, "fits": fits})
    return {
        "rows": rows,
        "fits": fits,
        "plots": plot_abilities(rows, fits, out),
        "json": out / "abilities.json",
    }
