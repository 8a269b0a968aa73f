"""Batches for training: pretraining windows (chat batches for SFT are in `chat_batches.py`).

Pretraining windows
-------------------
A token stream x (all documents, each preceded by `<|bos|>`) is cut into random windows of
`context + 1` tokens; a window w = x[s : s + context + 1] gives inputs w[:-1] and targets w[1:], so
position t is trained to predict x[s + t + 1] from x[s .. s + t] (the autoregressive objective).

Determinism. The windows of optimizer step `step` are drawn from a generator seeded with
(seed, step) only, as one *global* batch of G = batch_size · grad_accum · world_size rows. Rank r
takes rows for its micro-batch m at offset (m · world_size + r) · batch_size. So:
  - resuming at step k draws exactly the windows an uninterrupted run draws at step k;
  - 2 processes × batch b see the same rows as 1 process × batch 2b (or grad_accum 2 × batch b),
    which is what makes data-parallel and single-process runs comparable to the last bit.
"""

from __future__ import annotations

import numpy as np
import torch


def window_starts(n_tokens: int, context: int, global_batch: int, seed: int, step: int) -> np.ndarray:
    """Start offsets s ∈ [0, n_tokens − context − 1] of the global batch for `step` (int64 [G])."""
    high = n_tokens - context  # exclusive bound: s + context + 1 ≤ n_tokens
    if high <= 0:
        raise ValueError(f"need more than context={context} tokens, have {n_tokens}")
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, high, size=global_batch, dtype=np.int64)


def sample_windows(
    tokens: np.ndarray,
    context: int,
    batch_size: int,
    *,
    seed: int,
    step: int,
    rank: int = 0,
    world_size: int = 1,
    micro: int = 0,
    grad_accum: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [batch_size, context] (int64) for one micro-batch of one rank.

    `tokens` is a 1-D array (usually a uint16/uint32 memmap); only the sampled rows are read.
    """
    global_batch = batch_size * grad_accum * world_size
    starts = window_starts(len(tokens), context, global_batch, seed, step)
    row0 = (micro * world_size + rank) * batch_size
    return windows_at(tokens, starts[row0 : row0 + batch_size], context)


def eval_windows(n_tokens: int, context: int, max_windows: int) -> np.ndarray:
    """Start offsets of up to `max_windows` non-overlapping windows spread evenly over the stream,
    the same every time (validation must not depend on the seed or the step)."""
    n_fit = (n_tokens - 1) // context  # non-overlapping windows of context + 1 tokens (sharing ends)
    if n_fit <= 0:
        raise ValueError(f"need more than context={context} tokens, have {n_tokens}")
    n = min(n_fit, max_windows)
    slots = np.linspace(0, n_fit - 1, n).round().astype(np.int64)
    return slots * context


def windows_at(tokens: np.ndarray, starts: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for the windows starting at `starts`."""
    rows = torch.from_numpy(
        np.stack([np.asarray(tokens[s : s + context + 1], dtype=np.int64) for s in starts])
    )
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
