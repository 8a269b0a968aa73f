"""Induction rows: short rows of repeated random spans, where an induction head forms first.

An induction head finds the earlier occurrence of the current token and predicts what followed it
there (… A B … A → B). Every target of the demo needs one (a tool call copies operands, a grounded
answer copies a name), and in Shakespeare-sized pretraining it does not form. It does form on rows
made of nothing but span pairs

    s₁ s₁ s₂ s₂ s₃ s₃ …      |sᵢ| uniform in [4, row length / 4], ids uniform over the ordinary vocabulary,

where after the first token of a repeat every token is predictable, and only by content (the
distance back varies with |sᵢ|, so no head can copy by position alone). The row length matters:
in a 4 × 192 model with AdamW 3e-3 the head forms after ~1,700 steps of 16 rows of 64 tokens, and
not in 1,800 steps of 4 rows of 256 (the same tokens a step, the same spans): at the start a head
spreads its attention over every earlier position, so the one key that predicts gets a share of
~1/t of it, and with t ≤ 64 that signal is four times the one in rows of 256. Once formed, the head
copies in rows of 256 too. Rows of 32 (spans 4–8) formed it sooner still, which is the default
(`data.induction_context`), but the head copies only as far back as the rows' repeats stand (a
window of ~8 tokens, `eval.induction.copy_by_distance`); rows of 32 and 64 in turn
(`induction_context = [32, 64]`) keep the early head and widen the window. `data.induction_steps`
trains the first N pretraining steps on these rows, the same number of tokens a step
(docs/speedrun.md, "The induction probe" and "How far back the head copies").

Determinism as `batches.py`: step k's rows come from a generator seeded with (seed, step), drawn
as one global batch that ranks and micro-batches slice.
"""

from __future__ import annotations

import numpy as np
import torch

SPAN_MIN = 4


def span_max(length: int) -> int:
    """The longest span in a row of `length`: a quarter of it, so a row holds two pairs or more."""
    return max(SPAN_MIN, length // 4)


def span_pair_row(rng: np.random.Generator, length: int, n_ids: int) -> np.ndarray:
    """One row of `length` ids: s₁ s₁ s₂ s₂ … (the last pair cut at the end)."""
    parts, n, longest = [], 0, span_max(length)
    while n < length:
        span = rng.integers(0, n_ids, int(rng.integers(SPAN_MIN, longest + 1)))
        parts += [span, span]
        n += 2 * len(span)
    return np.concatenate(parts)[:length]


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
    context + 1 ids drawn from [0, n_ids)."""
    global_batch = batch_size * grad_accum * world_size
    rng = np.random.default_rng([seed, step, 0x1D])
    rows = np.stack([span_pair_row(rng, context + 1, n_ids) for _ in range(global_batch)])
    row0 = (micro * world_size + rank) * batch_size
    mine = torch.from_numpy(rows[row0 : row0 + batch_size].astype(np.int64))
    return mine[:, :-1].contiguous(), mine[:, 1:].contiguous()
