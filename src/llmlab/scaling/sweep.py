"""Scaling sweeps: many ordinary pretraining runs, one CSV of (params, tokens, flops, loss).

A sweep spec is a recipe (the usual [data] [model] [train] sections, shared by every run) plus a
[sweep] section that says which runs to make:

    [sweep]
    depths = [1, 2, 3, 4]     # model shapes by the depth rule below, one per depth
    aspect = 32               # d_model = aspect · depth, rounded up to a multiple of head_dim
    head_dim = 32             # n_head = d_model / head_dim (n_kv_head = n_head: plain attention)
    budgets = [1e12, 3e12]    # IsoFLOP budgets: for each C, every shape trains D = C / 6N tokens
    # tokens = [1e6, 3e6]     # ... or token budgets: every shape trains every D
    count = "non_embedding"   # which N goes into C = 6ND and the CSV's params column

    [sweep.forecast]          # optional: a larger held-out run for `llmlab scaling forecast`
    depth = 6
    flops = 3e13

Every run is `llmlab.train.pretrain.pretrain` with steps = round(D / (batch · grad_accum · context))
and warmup = warmup_frac · steps, so its learning-rate schedule ends exactly at its budget: each
point is a finished run, not a checkpoint of a longer one. Runs whose step count falls below
`min_steps` are left out (a few dozen steps measure the warmup, not the model), and so are runs
above `max_tokens_per_param` (tiny models trained far past their optimum: many steps, little
information).

Results: `<out>/<run name>/` model directories and `<out>/results.csv` with columns
name, params, tokens, flops, loss, val_bpb, params_kind, params_total, params_non_embedding,
flops_exact, budget, depth, n_layer, d_model, n_head, d_ff, steps, wall_s
(params = N per `count`, tokens = D actually trained, flops = 6·params·tokens, loss = validation
loss in nats/token, flops_exact = D · exact FLOPs per token with attention). A rerun skips every run
whose directory already holds summary.json.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.config import (
    DataSection,
    ModelSection,
    Recipe,
    TrainSection,
    apply_overrides,
    from_dict,
    read_toml,
)
from llmlab.errors import UserError
from llmlab.io import atomic_write_text, read_json
from llmlab.io import progress as progress_bar

CSV_COLUMNS = [
    "name",
    "params",
    "tokens",
    "flops",
    "loss",
    "val_bpb",
    "params_kind",
    "params_total",
    "params_non_embedding",
    "flops_exact",
    "budget",
    "depth",
    "n_layer",
    "d_model",
    "n_head",
    "d_ff",
    "steps",
    "wall_s",
]


@dataclass
class ForecastSection:
    """The held-out run a forecast predicts: a depth and a FLOP budget (or a token budget)."""

    depth: int = 0  # 0 = no forecast target
    flops: float = 0.0
    tokens: float = 0.0


@dataclass
class SweepSection:
    depths: list[int] = field(default_factory=list)
    aspect: int = 32  # d_model ≈ aspect · depth
    head_dim: int = 32  # n_head = d_model / head_dim
    ffn_mult: float = 8 / 3  # d_ff = ffn_mult · d_model rounded to a multiple of 16 (SwiGLU's 8/3)
    budgets: list[float] = field(default_factory=list)  # IsoFLOP budgets C (FLOPs)
    tokens: list[float] = field(default_factory=list)  # or token budgets D
    count: str = "non_embedding"  # N in C = 6ND: non_embedding | total
    min_steps: int = 10  # leave out runs shorter than this
    max_tokens_per_param: float = 0.0  # leave out runs with D/N above this (0 = no limit)
    warmup_frac: float = 0.1  # warmup = warmup_frac · steps
    workers: int = 1  # runs trained at once, each in its own process
    threads: int = 1  # torch threads per run (tiny models are overhead-bound; threads fight)
    forecast: ForecastSection = field(default_factory=ForecastSection)


@dataclass
class SweepSpec:
    sweep: SweepSection = field(default_factory=SweepSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    def base_recipe(self) -> Recipe:
        return Recipe(
            data=copy.deepcopy(self.data), model=copy.deepcopy(self.model), train=copy.deepcopy(self.train)
        )


@dataclass
class PlannedRun:
    """One planned pretraining run of a sweep."""

    name: str
    depth: int
    recipe: Recipe
    params: int  # N per the spec's count
    params_total: int
    params_non_embedding: int
    tokens: int  # D actually trained = steps · batch · grad_accum · context
    steps: int
    budget: float  # the IsoFLOP budget C it belongs to (0 for token sweeps)
    flops_exact: float
    shape: dict = field(default_factory=dict)


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None) -> SweepSpec:
    """Read a sweep spec TOML (with `--set section.key=value` overrides) and check it."""
    spec = from_dict(SweepSpec, apply_overrides(read_toml(path), overrides))
    validate_spec(spec, str(path))
    return spec


def validate_spec(spec: SweepSpec, where: str = "sweep spec") -> None:
    s = spec.sweep
    if not s.depths:
        raise UserError(f"{where}: sweep.depths is empty; list the model depths to train, e.g. [1, 2, 3]")
    if any(d <= 0 for d in s.depths):
        raise UserError(f"{where}: sweep.depths must be positive integers, got {s.depths}")
    if bool(s.budgets) == bool(s.tokens):
        raise UserError(
            f"{where}: give exactly one of sweep.budgets (IsoFLOP FLOP budgets) or sweep.tokens "
            "(token budgets)"
        )
    if any(v <= 0 for v in s.budgets + s.tokens):
        raise UserError(f"{where}: sweep.budgets / sweep.tokens must be positive")
    if s.count not in ("non_embedding", "total"):
        raise UserError(f"{where}: sweep.count must be 'non_embedding' or 'total', got {s.count!r}")
    if s.aspect <= 0 or s.head_dim <= 0 or s.head_dim % 2:
        raise UserError(f"{where}: sweep.aspect must be positive and sweep.head_dim positive and even")
    if s.workers < 1 or s.threads < 1:
        raise UserError(f"{where}: sweep.workers and sweep.threads must be ≥ 1")
    if not 0 <= s.warmup_frac < 1:
        raise UserError(f"{where}: sweep.warmup_frac must be in [0, 1), got {s.warmup_frac}")


def shape_for_depth(depth: int, aspect: int, head_dim: int, ffn_mult: float) -> dict[str, int]:
    """The depth rule: d_model = head_dim · ⌈aspect · depth / head_dim⌉, n_head = d_model / head_dim,
    n_kv_head = n_head, d_ff = 16 · round(ffn_mult · d_model / 16)."""
    d_model = head_dim * max(1, math.ceil(aspect * depth / head_dim))
    n_head = d_model // head_dim
    d_ff = max(16, 16 * round(ffn_mult * d_model / 16))
    return {"n_layer": depth, "d_model": d_model, "n_head": n_head, "n_kv_head": n_head, "d_ff": d_ff}


def _tokenizer_vocab(spec: SweepSpec) -> int:
    from llmlab.train.pretrain import resolve_tokenizer

    return resolve_tokenizer(spec.data, verbose=True).vocab_size


def _make_run(
    spec: SweepSpec, depth: int, vocab: int, *, tokens: float, budget: float, name: str
) -> PlannedRun:
    from llmlab.train.pretrain import model_config

    recipe = spec.base_recipe()
    shape = shape_for_depth(depth, spec.sweep.aspect, spec.sweep.head_dim, spec.sweep.ffn_mult)
    for k, v in shape.items():
        setattr(recipe.model, k, v)
    cfg = model_config(recipe.model, vocab)
    tc = recipe.train
    per_step = tc.batch_size * tc.grad_accum * cfg.context
    steps = max(1, round(tokens / per_step))
    tc.steps = steps
    tc.warmup = int(spec.sweep.warmup_frac * steps)
    tc.eval_every = steps  # evaluate once, at the end
    tc.save_every = steps
    n_total, n_non = cfg.num_params(), cfg.num_params(non_embedding=True)
    n = n_non if spec.sweep.count == "non_embedding" else n_total
    d = steps * per_step
    return PlannedRun(
        name=name,
        depth=depth,
        recipe=recipe,
        params=n,
        params_total=n_total,
        params_non_embedding=n_non,
        tokens=d,
        steps=steps,
        budget=budget,
        flops_exact=float(cfg.flops_per_token(cfg.context)) * d,
        shape=shape,
    )


def plan_runs(spec: SweepSpec, vocab: int | None = None) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """Every run of the sweep, smallest budget first: (kept, dropped), where a run is dropped when
    it has fewer than min_steps steps or more than max_tokens_per_param tokens per parameter.

    IsoFLOP: for each budget C and depth, D = C / 6N. Token budgets: every depth × every D."""
    vocab = vocab or _tokenizer_vocab(spec)
    runs = []
    s = spec.sweep
    for c in sorted(s.budgets):
        for depth in sorted(s.depths):
            probe = _make_run(spec, depth, vocab, tokens=1, budget=c, name="")
            runs.append(
                _make_run(
                    spec,
                    depth,
                    vocab,
                    tokens=c / (6.0 * probe.params),
                    budget=c,
                    name=f"c{c:.0e}-d{depth}".replace("+", ""),
                )
            )
    for t in sorted(s.tokens):
        for depth in sorted(s.depths):
            runs.append(
                _make_run(
                    spec, depth, vocab, tokens=t, budget=0.0, name=f"t{t:.0e}-d{depth}".replace("+", "")
                )
            )

    def keep(r: PlannedRun) -> bool:
        too_long = s.max_tokens_per_param > 0 and r.tokens / r.params > s.max_tokens_per_param
        return r.steps >= s.min_steps and not too_long

    kept = [r for r in runs if keep(r)]
    dropped = [r for r in runs if not keep(r)]
    return kept, dropped


def forecast_run(spec: SweepSpec, vocab: int | None = None) -> PlannedRun:
    """The held-out run of [sweep.forecast]."""
    f = spec.sweep.forecast
    if f.depth <= 0 or bool(f.flops) == bool(f.tokens):
        raise UserError("sweep.forecast: set depth and exactly one of flops or tokens for the held-out run")
    vocab = vocab or _tokenizer_vocab(spec)
    if f.flops:
        probe = _make_run(spec, f.depth, vocab, tokens=1, budget=f.flops, name="")
        return _make_run(
            spec,
            f.depth,
            vocab,
            tokens=f.flops / (6.0 * probe.params),
            budget=f.flops,
            name=f"forecast-c{f.flops:.0e}-d{f.depth}".replace("+", ""),
        )
    return _make_run(
        spec,
        f.depth,
        vocab,
        tokens=f.tokens,
        budget=0.0,
        name=f"forecast-t{f.tokens:.0e}-d{f.depth}".replace("+", ""),
    )


def execute(run: PlannedRun, out_dir: Path, count: str) -> dict[str, Any]:
    """Train one run unless its directory already holds summary.json (from the same tokenizer);
    return its CSV row."""
    run_dir = out_dir / run.name
    summary_path = run_dir / "summary.json"
    if summary_path.is_file() and _same_tokenizer(run_dir / "tokenizer.json", run.recipe.data.tokenizer):
        summary = read_json(summary_path, "run summary")
    else:
        from llmlab.train.pretrain import pretrain

        summary = pretrain(run.recipe, run_dir, resume=False, verbose=False, sample=False)
    if not math.isfinite(summary.get("val_loss", math.nan)):
        raise UserError(f"{run_dir}: run has no finite validation loss; set data.val_fraction > 0")
    return {
        "name": run.name,
        "params": run.params,
        "tokens": int(summary["train_tokens"]),
        "flops": 6.0 * run.params * summary["train_tokens"],
        "loss": summary["val_loss"],
        "val_bpb": summary.get("val_bpb", math.nan),
        "params_kind": count,
        "params_total": run.params_total,
        "params_non_embedding": run.params_non_embedding,
        "flops_exact": run.flops_exact,
        "budget": run.budget,
        "depth": run.depth,
        "n_layer": run.shape["n_layer"],
        "d_model": run.shape["d_model"],
        "n_head": run.shape["n_head"],
        "d_ff": run.shape["d_ff"],
        "steps": run.steps,
        "wall_s": summary.get("wall_s", math.nan),
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _same_tokenizer(a: Path, b: str) -> bool:
    """Whether two tokenizer files hold the same tokenizer (always true when `b` is unset)."""
    if not b:
        return True
    try:
        return json.loads(a.read_text(encoding="utf-8")) == json.loads(Path(b).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def prepare_data(spec: SweepSpec, out_dir: Path) -> SweepSpec:
    """Pin the sweep's tokenizer and build its token shards once, before any run.

    The tokenizer (the spec's data.tokenizer, or one trained on data.source) is copied to
    `<out_dir>/tokenizer.json` the first time and read from there afterwards, so every run of a
    sweep directory, including a forecast run trained later, sees the same tokens even if the
    tokenizer trainer changes in between. Returns the spec with data.tokenizer set to that file.
    Parallel runs then only read caches."""
    from llmlab.data.shards import build_shards
    from llmlab.tokenizer import Tokenizer
    from llmlab.train.pretrain import resolve_tokenizer

    pinned = out_dir / "tokenizer.json"
    if pinned.is_file():
        tok = Tokenizer.load(pinned)
    else:
        tok = resolve_tokenizer(spec.data, verbose=True)
        tok.save(pinned)
    spec = copy.deepcopy(spec)
    spec.data.tokenizer = str(pinned)
    build_shards(spec.data.source, tok, val_fraction=spec.data.val_fraction, verbose=False)
    return spec


def _execute_in_worker(run: PlannedRun, out_dir: Path, count: str, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return execute(run, out_dir, count)


def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run (or finish) every run of a sweep; write `<out_dir>/results.csv` after each run and return
    its path. Finished runs (summary.json present) are read back, not retrained. One progress bar
    covers the whole sweep, in FLOPs (6ND), since runs differ in size.

    With sweep.workers = W > 1, W runs train at once in separate processes (sweep.threads torch
    threads each), largest first; the CSV keeps the plan's order."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, overrides)
    validate_spec(spec)
    out = Path(out_dir)
    spec = prepare_data(spec, out)
    runs, _dropped = plan_runs(spec)
    if not runs:
        raise UserError(
            f"sweep: every run has fewer than sweep.min_steps = {spec.sweep.min_steps} steps; "
            "raise the budgets or lower train.batch_size / model.context"
        )
    csv_path = out / "results.csv"
    rows: dict[int, dict[str, Any]] = {}
    count, threads = spec.sweep.count, spec.sweep.threads
    total = sum(6.0 * r.params * r.tokens for r in runs)
    with progress_bar(
        total=total, desc=f"sweep ({len(runs)} runs)", unit="FLOP", disable=None if progress else True
    ) as bar:

        def done(i: int, row: dict[str, Any]) -> None:
            rows[i] = row
            write_csv(csv_path, [rows[j] for j in sorted(rows)])
            bar.update(6.0 * runs[i].params * runs[i].tokens)
            bar.set_postfix_str(f"{row['name']} loss {row['loss']:.3f}")

        if spec.sweep.workers == 1:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for i, run in enumerate(runs):
                    done(i, execute(run, out, count))
            finally:
                torch.set_num_threads(before)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(spec.sweep.workers, mp_context=ctx) as pool:
                largest_first = sorted(range(len(runs)), key=lambda i: -runs[i].flops_exact)
                futures = {
                    pool.submit(_execute_in_worker, runs[i], out, count, threads): i for i in largest_first
                }
                for fut in as_completed(futures):
                    done(futures[fut], fut.result())
    return csv_path


def read_results(path: str | os.PathLike, params_column: str = "params") -> dict[str, Any]:
    """Read a scaling CSV (columns params, tokens, loss; flops and budget optional; extra columns
    ignored) into float arrays. Bad input is a one-line `UserError` naming the file, line and column.

    Returns {"params", "tokens", "loss", "flops" (6ND when absent), "budget" (or None),
    "params_kind" (from a params_kind column, else the params column's name), "names"}.
    """
    import numpy as np

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    need = [params_column, "tokens", "loss"]
    missing = [c for c in need if c not in header]
    if missing:
        raise UserError(
            f"{path}:1: missing column(s) {', '.join(missing)}; a scaling CSV needs "
            f"{', '.join(need)} (has: {', '.join(header) or 'nothing'})"
        )
    optional = [c for c in ("flops", "budget") if c in header]
    cols: dict[str, list[float]] = {c: [] for c in need + optional}
    kinds, names = set(), []
    for line, row in enumerate(reader, start=2):
        for c in cols:
            raw = (row.get(c) or "").strip()
            if c == "budget" and raw in ("", "0", "0.0"):
                cols[c].append(0.0)
                continue
            try:
                v = float(raw)
            except ValueError:
                raise UserError(f"{path}:{line}: column {c}: {raw!r} is not a number") from None
            if not (math.isfinite(v) and v > 0):
                raise UserError(
                    f"{path}:{line}: column {c}: {raw} is not positive; params, tokens, flops "
                    "and loss must be > 0"
                )
            cols[c].append(v)
        if params_column == "params":
            kinds.add(row.get("params_kind") or "params")
        else:
            kinds.add(params_column.removeprefix("params_"))
        names.append(row.get("name") or f"row{line}")
    if not names:
        raise UserError(f"{path}: no data rows")
    out: dict[str, Any] = {c: np.asarray(v) for c, v in cols.items()}
    out["params"] = out.pop(params_column)
    out.setdefault("flops", 6.0 * out["params"] * out["tokens"])
    budget = out.pop("budget", None)
    out["budget"] = budget if budget is not None and np.all(budget > 0) else None
    out["params_kind"] = kinds.pop() if len(kinds) == 1 else "mixed"
    out["names"] = names
    return out
