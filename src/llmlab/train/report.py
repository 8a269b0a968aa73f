"""What the training stages (pretraining and SFT) share in the speedrun:
their metrics.jsonl, their stage dict and their report table and loss plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from llmlab.pipeline import StageContext
from llmlab.report import fmt
from llmlab.report.plots import plot_loss_curves
from llmlab.report.render import Block, Figure, Table

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` (malformed lines, e.g. a half-written last one, are skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records


def fill_from_metrics(res: dict, metrics: Path) -> None:
    """A run resumed at its last step returns no eval numbers: take them from its last logged eval."""
    val = res.get("val_loss")
    if (isinstance(val, int | float) and math.isfinite(val)) or not metrics.exists():
        return
    evals = [r for r in read_metrics(metrics) if r.get("val_loss") is not None]
    if evals:
        res.update({k: v for k, v in evals[-1].items() if k.startswith("val_")})


def training_result(ctx: StageContext, out: Path, summary: dict) -> dict:
    """A training run's summary as a stage dict: eval numbers (from metrics.jsonl after a resume), the
    model-directory outputs, the loop's own wall time as train_wall_s, tokens for the stage table."""
    res = dict(summary)
    fill_from_metrics(res, out / "metrics.jsonl")
    res["train_wall_s"] = res.pop("wall_s", None)  # the stage's own wall_s is added by the runner
    res["outputs"] = [ctx.rel(out / f) for f in MODEL_FILES]
    if (out / "metrics.jsonl").exists():
        res["metrics"] = ctx.rel(out / "metrics.jsonl")
    res["tokens"] = res.get("train_tokens")
    return res


TRAINING_ROWS = [
    ("params", "parameters", fmt.count),
    ("non_embedding_params", "non-embedding parameters", fmt.count),
    ("train_tokens", "training tokens", fmt.count),
    ("flops", "training FLOPs", fmt.sci),
    ("steps", "steps", fmt.count),
    ("conversations", "training conversations", fmt.count),
    ("epochs", "epochs", fmt.cell),
    ("base_val_loss", "val loss before SFT (nats/token)", fmt.cell),
    ("val_loss", "val loss (nats/token)", fmt.cell),
    ("val_bpb", "val bits per byte", fmt.cell),
    ("unigram_bpb", "unigram baseline bpb", fmt.cell),
    ("tokens_per_s", "tokens/s", fmt.cell),
    ("mfu", "MFU (model FLOP/s ÷ peak)", fmt.pct),
    ("train_wall_s", "training-loop wall time (s)", fmt.cell),
    ("wall_s", "stage wall time (s)", fmt.cell),
]


def training_table(r: dict) -> Table:
    return Table(
        ["quantity", "value"], [[label, f(r[k])] for k, label, f in TRAINING_ROWS if r.get(k) is not None]
    )


def loss_figure(r: dict, ctx, name: str) -> list[Block]:
    """The run's loss curves; SFT's base_val_loss (the base model on the same val data) is step 0."""
    if not r.get("metrics"):
        return []
    before = r.get("base_val_loss")
    extra = {name: [(0, before)]} if isinstance(before, int | float) else None
    png = plot_loss_curves(
        {name: read_metrics(ctx.path(r["metrics"]))}, ctx.fig_dir / f"loss_{name}.png", extra_val=extra
    )
    return [Figure(png, f"{name}: training and validation loss")] if png else []
