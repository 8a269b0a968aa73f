"""What the alignment trainers share: the [train] settings a stage section replaces, seeded
epoch-order batches that are a pure function of the step (so --resume and DDP are exact), each
rank's own rollout stream, and the policy/reference pair with its vocabulary check."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
from pathlib import Path

import torch

from llmlab.errors import UserError


def loop_settings(train_section, section, steps: int, **extra):
    """recipe.train with the stage section's optimisation keys (device, dtype, clip... stay). The
    alignment stages train with AdamW whatever train.optimizer says: their learning rates are AdamW's."""
    keys = ("batch_size", "lr", "min_lr", "warmup", "schedule", "weight_decay", "seed")
    kw = {k: getattr(section, k) for k in keys if hasattr(section, k)}
    kw["optimizer"] = "adamw"
    kw.update(extra)
    kw["warmup"] = min(kw.get("warmup", train_section.warmup), steps // 2)
    return dataclasses.replace(
        train_section, steps=steps, grad_accum=1, eval_every=steps, sample_every=0, **kw
    )


def steps_for(section, n_items: int) -> int:
    """section.steps, or epochs × ⌈items / batch_size⌉ when it is 0."""
    return section.steps or max(1, math.ceil(section.epochs * n_items / section.batch_size))


class EpochBatches:
    """Indices of batch `b` (global): epoch e = b // per_epoch is a permutation seeded by (seed, e)."""

    def __init__(self, n_items: int, batch_size: int, seed: int):
        self.n, self.bs, self.seed = n_items, min(batch_size, n_items), seed
        self.per_epoch = max(1, n_items // self.bs)
        self._cache: dict[int, list[int]] = {}

    def indices(self, b: int) -> list[int]:
        e, i = divmod(b, self.per_epoch)
        if e not in self._cache:
            order = list(range(self.n))
            random.Random(f"{self.seed}-{e}").shuffle(order)
            self._cache = {e: order}
        return self._cache[e][i * self.bs : (i + 1) * self.bs]


def rank_stream(batch_index: int, seed: int, info) -> tuple[int, int]:
    """(prompt-batch index, sampling seed) of this rank for global rollout batch `batch_index`:
    rank r of W takes batch W·i + r of the prompt order and seed W·s + r, so the W ranks roll out
    disjoint prompts with distinct samples (one process: i and s unchanged)."""
    return batch_index * info.world_size + info.rank, seed * info.world_size + info.rank


def check_rollout_parallelism(train_section, info) -> None:
    """RL rollouts run the whole policy on each rank, a different number of decode steps per rank:
    under FSDP every forward is a collective that all ranks must join, so only DDP is allowed."""
    if info.is_distributed and train_section.distributed == "fsdp":
        raise UserError(
            "train.distributed=fsdp: RL rollouts decode on each rank independently, which FSDP's "
            "collective forwards cannot do; use train.distributed=ddp"
        )


def load_policy(path: str | os.PathLike, what: str):
    """(model, tokenizer) of an LM-head model directory that has a tokenizer."""
    from llmlab.model.load import load_with_head

    model, tok = load_with_head(path, "lm", what)
    if tok is None:
        raise UserError(f"{path}: no tokenizer.json; {what} needs the model's tokenizer")
    return model, tok


def check_same_vocab(a, b, a_name: str, b_name: str) -> None:
    """Policy and reference (or reward model) must read the same token ids."""
    va, vb = a.cfg.vocab_size, b.cfg.vocab_size
    if va != vb:
        raise UserError(
            f"{b_name} has a vocabulary of {vb} tokens but {a_name} has {va}; they must share one tokenizer"
        )


def freeze_unused_lm_head(model: torch.nn.Module) -> torch.nn.Module:
    """A scalar-head model (reward, value) never runs its trunk's LM head; an untied one is a
    parameter without a gradient, which DDP would wait for forever (tied, it is the embedding)."""
    if not model.cfg.tie_embeddings:
        model.trunk.lm_head.requires_grad_(False)
    return model


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference π_ref: a copy of the policy at the start, never trained."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def generation_config(policy_dir: str | os.PathLike) -> dict | None:
    from llmlab.io import read_json

    f = Path(policy_dir) / "generation.json"
    return read_json(f, "generation config") if f.is_file() else None


def pad_token(tok) -> int:
    """<|bos|>: right padding that never ends a real sequence (HF's classifier scores the last
    non-pad token, and every completion ends with <|end|>)."""
    return tok.special_tokens.get("<|bos|>", 0)
