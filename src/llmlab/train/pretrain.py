"""Pretraining: a base model trained on a corpus with the autoregressive objective.

    maximise log p(x) = Σ_t log p(x_t | x_<t)   ⇔   minimise the next-token cross-entropy

    from llmlab.config import load_recipe
    from llmlab.train.pretrain import pretrain
    summary = pretrain(load_recipe("recipes/shakespeare-cpu.toml"), "runs/demo")
    summary["val_loss"], summary["val_bpb"], summary["unigram_bpb"], summary["sample"]

The pipeline: tokenizer (the recipe's file, or one trained on the source and cached) → token shards
(cached) → model from the preset + overrides → `llmlab.train.loop.train` with random windows and
the cross-entropy → a model directory in `out_dir` (config.json, model.safetensors, tokenizer.json,
train_state.pt, metrics.jsonl, recipe.toml, summary.json).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmlab.config import Recipe, to_dict
from llmlab.errors import UserError
from llmlab.io import atomic_write_json, llmlab_home, write_toml
from llmlab.model.config import ModelConfig, preset
from llmlab.model.load import save_model_dir
from llmlab.model.transformer import Transformer
from llmlab.train import distributed
from llmlab.train.induction_phase import InductionPhase, heldout_repeat_loss
from llmlab.train.loop import train
from llmlab.train.losses import lm_loss_sum

SAMPLE_TOKENS = 200


# ---- tokenizer ------------------------------------------------------------------------------------
def resolve_tokenizer(data, verbose: bool = True):
    """The tokenizer for a run: the recipe's `data.tokenizer` file; else the one saved in a shard
    folder given as `data.source`; else a BPE tokenizer trained on the *training* documents of
    `data.source` (validation text stays unseen) with `data.vocab_size` and `data.pattern`, cached
    under $LLMLAB_HOME/tokenizers by (source, vocab_size, pattern, val_fraction)."""
    from llmlab.tokenizer import Tokenizer

    if data.tokenizer:
        path = Path(data.tokenizer).expanduser()
        if not path.is_file():
            raise UserError(
                f"data.tokenizer: {path} does not exist; give a tokenizer.json or leave it "
                "empty to train one on data.source"
            )
        return Tokenizer.load(path)
    source = Path(str(data.source))
    if (source / "meta.json").is_file() and (source / "tokenizer.json").is_file():  # a shard folder
        return Tokenizer.load(source / "tokenizer.json")
    from llmlab.data.shards import source_fingerprint, split_documents

    key = hashlib.sha256(
        json.dumps(
            {
                "source": source_fingerprint(data.source),
                "vocab": data.vocab_size,
                "pattern": data.pattern,
                "val_fraction": data.val_fraction,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    path = llmlab_home() / "tokenizers" / key / "tokenizer.json"
    if path.is_file():
        return Tokenizer.load(path)
    from llmlab.data.corpus import load_documents

    if verbose:
        print(f"training a {data.vocab_size}-token BPE tokenizer on {data.source} ...", file=sys.stderr)
    train_docs, _ = split_documents(load_documents(data.source), data.val_fraction)
    tok = Tokenizer.train(train_docs, data.vocab_size, pattern=data.pattern)
    tok.save(path)
    return tok


# ---- model ----------------------------------------------------------------------------------------
def model_config(section, tokenizer_vocab: int) -> ModelConfig:
    """The preset with the recipe's non-zero overrides; vocab_size defaults to the tokenizer's."""
    fields = ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "context")
    overrides: dict[str, Any] = {f: getattr(section, f) for f in fields if getattr(section, f)}
    for f in ("tie_embeddings", "qk_norm", "dropout"):
        if getattr(section, f) is not None:
            overrides[f] = getattr(section, f)
    vocab = section.vocab_size or tokenizer_vocab
    if vocab < tokenizer_vocab:
        raise UserError(
            f"model.vocab_size = {vocab} but the tokenizer has {tokenizer_vocab} tokens; "
            f"set model.vocab_size ≥ {tokenizer_vocab} (or 0 to use the tokenizer's)"
        )
    overrides["vocab_size"] = vocab
    return preset(section.preset, **overrides)


# ---- evaluation and sampling ----------------------------------------------------------------------
def make_eval_fn(
    val: np.ndarray,
    context: int,
    batch_size: int,
    n_batches: int,
    token_bytes: torch.Tensor,
    info: distributed.DistInfo,
):
    """Validation loss (nats/token) and bits per byte over fixed windows spread over the val split,
    split evenly across ranks (every rank runs the same number of forwards: FSDP needs that)."""
    from llmlab.data.batches import eval_windows, windows_at
    from llmlab.eval.perplexity import loss_and_bpb, nll_sums

    starts = eval_windows(len(val), context, max(1, n_batches * batch_size))
    per_rank = max(1, len(starts) // info.world_size)
    mine = (
        starts[info.rank * per_rank : (info.rank + 1) * per_rank]
        if len(starts) >= info.world_size
        else starts[:1]
    )

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        batches = (
            windows_at(val, mine[i : i + batch_size], context) for i in range(0, len(mine), batch_size)
        )
        sums = distributed.all_reduce_sum(list(nll_sums(model, batches, token_bytes)), info)
        return loss_and_bpb(*sums)

    return eval_fn


def sample_text(
    model: torch.nn.Module,
    tok,
    max_new_tokens: int = SAMPLE_TOKENS,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int = 50,
) -> str:
    """A document sampled from scratch: the prompt is `<|bos|>` alone."""
    from llmlab.generate import generate

    was_training = model.training
    model.eval()
    try:
        return generate(
            model,
            tok,
            [tok.special_tokens["<|bos|>"]],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
        )
    finally:
        model.train(was_training)


# ---- the stage ------------------------------------------------------------------------------------
def pretrain(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    resume: bool = False,
    verbose: bool = True,
    sample: bool = True,
) -> dict[str, Any]:
    """Train a base model as the recipe says, writing a model directory to `out_dir`.

    Returns a summary: val_loss (nats/token), val_bpb, unigram_bpb (the context-free baseline on the
    same split), train_tokens, params, non_embedding_params, flops (6N + attention per token ×
    tokens), wall_s, tokens_per_s, mfu, loss (last training step), sample (text), out_dir, metrics.
    `verbose=False` keeps it quiet (for sweeps); `sample=False` skips the end-of-run sample.
    """
    from llmlab.data.batches import sample_windows
    from llmlab.data.induction import induction_batch
    from llmlab.data.shards import build_shards, token_byte_lengths, tokenizer_sha256, unigram_bpb

    recipe = copy.deepcopy(recipe)
    tc = recipe.train
    info = distributed.setup(tc.device)
    out = Path(out_dir)
    talk = verbose and info.is_main
    try:
        if info.is_main:  # also fails early, with a one-line error, when out_dir is not writable
            write_toml(out / "recipe.toml", to_dict(recipe))

        # Tokenizer and shards: rank 0 builds (and caches), the others then read the cache.
        if info.is_main:
            tok = resolve_tokenizer(recipe.data, talk)
            shards = build_shards(
                recipe.data.source, tok, val_fraction=recipe.data.val_fraction, verbose=talk
            )
        distributed.barrier(info)
        if not info.is_main:
            tok = resolve_tokenizer(recipe.data, False)
            shards = build_shards(
                recipe.data.source, tok, val_fraction=recipe.data.val_fraction, verbose=False
            )
        if shards.vocab_size != tok.vocab_size or shards.meta.get("tokenizer_sha256") != tokenizer_sha256(
            tok
        ):
            raise UserError(
                f"{shards.dir}: these shards were built with a different tokenizer "
                f"({shards.vocab_size} tokens) than data.tokenizer ({tok.vocab_size}); "
                "rebuild them from the text source"
            )

        cfg = model_config(recipe.model, tok.vocab_size)
        T = cfg.context
        if len(shards.train) <= T + 1:
            raise UserError(
                f"data: the training split has {len(shards.train)} tokens, not more than "
                f"model.context + 1 = {T + 1}; lower model.context or add text"
            )
        has_val = len(shards.val) > T + 1
        if recipe.data.val_fraction > 0 and not has_val:
            raise UserError(
                f"data: the validation split has {len(shards.val)} tokens, not more than "
                f"model.context + 1 = {T + 1}; raise data.val_fraction, lower model.context "
                "or add text"
            )

        torch.manual_seed(tc.seed)
        model = Transformer(cfg)
        token_bytes_np = token_byte_lengths(tok, cfg.vocab_size)
        token_bytes = torch.from_numpy(token_bytes_np)
        if talk:
            print(
                f"model: {cfg.num_params() / 1e6:.2f}M params ({cfg.num_params(True) / 1e6:.2f}M non-embedding), "
                f"{cfg.n_layer}×{cfg.d_model}, context {T}, vocab {cfg.vocab_size}; data: "
                f"{len(shards.train):,} train / {len(shards.val):,} val tokens ({shards.dir})",
                file=sys.stderr,
            )

        train_data = shards.train

        # Induction rows first (data/induction.py), until a copying head forms (train/induction_phase.py),
        # then the corpus with a rehearsal step every data.induction_every; as many tokens a step,
        # in rows of induction_context (a list: step k takes the (k mod n)-th length; rehearsal the longest).
        ics = recipe.data.induction_context
        ics = [min(c, T) for c in (ics if isinstance(ics, list) else [ics])]
        n_ids = min(tok.special_tokens.values(), default=tok.vocab_size)
        phase = InductionPhase(
            min(recipe.data.induction_steps, tc.steps),
            recipe.data.induction_goal,
            recipe.data.induction_every,
            max(ics),
            n_ids,
            verbose=talk,
        )

        def get_batch(step: int, micro: int):
            where = dict(rank=info.rank, world_size=info.world_size, micro=micro, grad_accum=tc.grad_accum)
            if phase.is_induction(step):
                ic = ics[step % len(ics)] if phase.ended_at is None or step < phase.ended_at else max(ics)
                rows = max(1, tc.batch_size * T // ic)
                return induction_batch(ic, rows, n_ids, seed=tc.seed, step=step, **where)
            return sample_windows(train_data, T, tc.batch_size, seed=tc.seed, step=step, **where)

        tb_dev = token_bytes.to(info.device)

        def loss_fn(model: torch.nn.Module, batch) -> tuple[torch.Tensor, int, dict]:
            x, y = batch  # the loop divides the summed loss by the global count of kept targets
            loss, kept = lm_loss_sum(model, x, y)
            return loss, kept.numel(), {"tokens": y.numel(), "bytes": tb_dev[kept].sum()}

        def on_checkpoint(state: dict, step: int) -> None:
            save_model_dir(out, model, tok, state=state)

        eval_fn = (
            make_eval_fn(shards.val, T, tc.batch_size, tc.eval_batches, token_bytes, info)
            if has_val
            else None
        )
        summary = train(
            model,
            tc,
            out,
            get_batch,
            loss_fn,
            eval_fn=eval_fn,
            on_checkpoint=on_checkpoint,
            before_step=phase.before_step,
            extra_state=phase,
            sample_fn=(lambda m: sample_text(m, tok, 64, tc.seed)) if sample else None,
            dist_info=info,
            flops_per_token=cfg.flops_per_token(T),
            resume=resume,
            verbose=verbose,
        )

        summary.update(
            params=cfg.num_params(),
            non_embedding_params=cfg.num_params(non_embedding=True),
            unigram_bpb=unigram_bpb(shards.train, shards.val, token_bytes_np) if has_val else math.nan,
            out_dir=str(out),
            metrics=str(out / "metrics.jsonl"),
            shards=str(shards.dir),
            context=T,
            vocab_size=cfg.vocab_size,
        )
        if phase.cap > 0:  # the phase, and h once more on the final model (did the head survive the text?)
            final = heldout_repeat_loss(model, phase.context, n_ids)
            summary.update(
                induction_phase={
                    **phase.state_dict(),
                    "goal": phase.goal,
                    "every": phase.every,
                    "final": final,
                }
            )
        if sample and info.is_main and not (info.is_distributed and tc.distributed == "fsdp"):
            summary["sample"] = sample_text(model, tok, SAMPLE_TOKENS, tc.seed)
        if info.is_main:
            atomic_write_json(
                out / "summary.json",
                {k: v for k, v in summary.items() if isinstance(v, str | int | float | type(None))},
            )
            if talk:
                print(
                    f"val loss {summary['val_loss']:.4f} nats/token, {summary['val_bpb']:.4f} bpb "
                    f"(unigram baseline {summary['unigram_bpb']:.4f} bpb); {summary['train_tokens']:,} tokens "
                    f"in {summary['wall_s']:.0f}s; model directory {out}",
                    file=sys.stderr,
                )
        return summary
    finally:
        distributed.cleanup(info)
