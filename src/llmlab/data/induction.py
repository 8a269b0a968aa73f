"""Induction rows: short rows of repeated random spans, where an induction head forms first.

An induction head finds the earlier occurrence of the current token and predicts what followed it
there (… A B … A → B). Every target of the demo needs one (a tool call copies operands, a grounded
answer copies a name), and in Shakespeare-sized pretraining it does not form. It does form on rows
made of nothing but span pairs

    s₁ s₁ s₂ s₂ s₃ s₃ …      |sᵢ| uniform in [4, row length / 4], ids uniform over the ordinary vocabulary,

where after the first token of a repeat every token is predictable, and only by content (the
distance back varies with |sᵢ|, so no head can copy by position alone). Only those tokens are
targets (the rest are IGNORE_INDEX, and the LM head skips them):

    L = −(1/|R|) Σ_{t ∈ R} log p(x_{t+1} | x_≤t),   R = the positions whose next id is a repeat's 2nd..|s|-th

A uniformly random target carries no signal, only gradient noise (which Adam's second moment
then divides every step by): with it, in a 4 × 192 model with AdamW 3e-3, rows of 32 and 64 in turn
formed the head after ~1,700 steps; without it, after ~700 (docs/speedrun.md, "The loss on the
repeats only"). The row length matters too: at the start a head spreads its attention over every
earlier position, so the one key that predicts gets a share of ~1/t of it; rows of 64 formed the
head where rows of 256 (the same tokens a step) did not. Once formed, it copies in rows of 256
too, but only as far back as the rows' repeats stand (rows of 32 alone: a window of ~8 tokens,
`eval.induction.copy_by_distance`); rows of 32 and 64 in turn (`induction_context = [32, 64]`)
form it early and widen the window. `data.induction_steps` trains the first N pretraining steps on
these rows, the same number of tokens a step (docs/speedrun.md, "The induction probe" and "How far
back the head copies").

Determinism as `batches.py`: step k's rows come from a generator seeded with (seed, step), drawn
as one global batch that ranks and micro-batches slice.
"""

from __future__ import annotations

import numpy as np
import torch

from llmlab.train.losses import IGNORE_INDEX

SPAN_MIN = 4


def span_max(length: int) -> int:
    """The longest span in a row of `length`: a quarter of it, so a row holds two pairs or more."""
    return max(SPAN_MIN, length // 4)


def span_pair_row(rng: np.random.Generator, length: int, n_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """One row of `length` ids, s₁ s₁ s₂ s₂ … (the last pair cut at the end), and a bool mask of the
    ids an induction head predicts: the 2nd..|s|-th of each repeat."""
    parts, masks, n, longest = [], [], 0, span_max(length)
    while n < length:
        span = rng.integers(0, n_ids, int(rng.integers(SPAN_MIN, longest + 1)))
        parts += [span, span]
        masks.append(np.arange(2 * len(span)) > len(span))
        n += 2 * len(span)
    return np.concatenate(parts)[:length], np.concatenate(masks)[:length]


def induction_batch(
    context: int,
    batch_size: int,
    n_ids: int,
    *,
    seed: int,
    step: int,
    rank: int = 0,
    world_size: int = 1,
    micro: int = 0,
    grad_accum: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [batch_size, context] for one micro-batch of one rank: span-pair rows of
    context + 1 ids drawn from [0, n_ids), targets IGNORE_INDEX where no copy predicts them."""
    global_batch = batch_size * grad_accum * world_size
    rng = np.random.default_rng([seed, step, 0x1D])
    ids, predictable = zip(*(span_pair_row(rng, context + 1, n_ids) for _ in range(global_batch)))
    mine = slice((micro * world_size + rank) * batch_size, (micro * world_size + rank + 1) * batch_size)
    rows = torch.from_numpy(np.stack(ids[mine]).astype(np.int64))
    targets = rows[:, 1:].masked_fill(~torch.from_numpy(np.stack(predictable[mine])[:, 1:]), IGNORE_INDEX)
    return rows[:, :-1].contiguous(), targets.contiguous()
