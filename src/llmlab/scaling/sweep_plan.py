"""Sweep specs and their plans: which pretraining runs a sweep makes, by the depth rule, with each
run's steps set so its schedule ends exactly at its budget (the spec format is in `llmlab.scaling.sweep`)."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

from llmlab.config import (
    DataSection,
    ModelSection,
    Recipe,
    TrainSection,
    apply_overrides,
    from_dict,
)
from llmlab.errors import UserError
from llmlab.io import read_toml


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
