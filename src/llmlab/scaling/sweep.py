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
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.io import atomic_write_text, read_json
from llmlab.io import progress as progress_bar
from llmlab.scaling.sweep_plan import PlannedRun, SweepSpec, load_spec, plan_runs, validate_spec

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
