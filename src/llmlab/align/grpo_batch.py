"""GRPO's training batch: one row per group of k samples, the prompt read once.

    row g     prompt x (p tokens) | y_1 (c_1)   | y_2 (c_2)   | … | y_k (c_k)     right-padded
    position  0 … p−1             | p … p+c_1−1 | p … p+c_2−1 | …                (each y_i restarts)
    mask      causal, except that no y_i query sees a y_j key (j ≠ i)

Every token of y_i then sees exactly x and its own prefix, at the positions it has in a row of its
own, so each hidden state is the one of the k-row layout (`rollout.rl_batch`: x + y_i per row) up to
float summation order, while x runs through the trunk once per group instead of k times (the built-in
arithmetic task at k = 8: ~85 positions per group instead of 8 padded rows of ~21). With
o_i = c_1 + … + c_{i−1}, token j of y_i is predicted at slot

    s(i, 0) = p − 1,    s(i, j) = p + o_i + j − 1  (j ≥ 1)

and only those slots go through the LM head (`selected_logprobs`). Per-token tensors (π_old, π_ref,
the mask, what `grpo_loss` reads) live on a completion grid [B·k, C], C = the longest completion:
cell (i, j) is token j of completion i, so the loss, its gradient and every metric are those of the
k-row layout (tests/align/test_grpo_batch.py).

The group row's attention reads every one of its W_g = p + Σ c_i keys (a dense mask), so long
completions make it dearer than it saves: `rollout_batch` takes it only when its training FLOPs
(`ModelConfig.flops_per_token`) are below the k-row layout's, and only for an llmlab `Transformer`.
"""

from __future__ import annotations

import torch

from llmlab.align.rollout import Sample, rl_batch
from llmlab.model.logprobs import selected_logprobs, token_logprobs


def group_batch(samples: list[Sample], k: int, pad_id: int) -> dict[str, torch.Tensor]:
    """{"ids", "positions" [G, W], "attn_mask" [G, 1, W, W] (True = may attend), "source", "targets",
    "cells" [N] (scored slots in the flat [G·W], their next tokens, their flat cell of the grid),
    "mask", "old_logps" [B·k, C] (the grid; old_logps nan where the engine recorded none: stop
    tokens), "finished" [B·k]} for samples grouped contiguously by prompt (k each)."""
    if not samples or len(samples) % k:
        raise ValueError(f"group_batch: {len(samples)} samples do not split into groups of {k}")
    groups = [samples[g : g + k] for g in range(0, len(samples), k)]
    if any(s.prompt != grp[0].prompt or not s.prompt for grp in groups for s in grp):
        raise ValueError("group_batch: the samples of a group must share one non-empty prompt")
    width = max(len(grp[0].prompt) + sum(len(s.tokens) for s in grp) for grp in groups)
    C = max(1, max(len(s.tokens) for s in samples))
    G = len(groups)
    ids = torch.full((G, width), pad_id, dtype=torch.long)
    positions = torch.zeros((G, width), dtype=torch.long)
    allowed = torch.ones((G, width, width), dtype=torch.bool).tril()
    mask = torch.zeros((len(samples), C))
    old = torch.zeros((len(samples), C))
    source: list[int] = []
    cells: list[int] = []
    for g, grp in enumerate(groups):
        prompt = grp[0].prompt
        p, off = len(prompt), len(prompt)  # off: where the next completion starts in the row
        ids[g, :p] = torch.tensor(prompt)
        positions[g, :p] = torch.arange(p)
        for i, s in enumerate(grp):
            c, row = len(s.tokens), g * k + i
            if c:
                ids[g, off : off + c] = torch.tensor(s.tokens)
                positions[g, off : off + c] = torch.arange(p, p + c)
                allowed[g, off : off + c, p:off] = False  # no earlier completion of the group
                mask[row, :c] = 1
                old[row, :c] = torch.tensor(s.logprobs)
            source += [g * width + (p - 1 if j == 0 else off + j - 1) for j in range(c)]
            cells += [row * C + j for j in range(c)]
            off += c
    return {
        "ids": ids,
        "positions": positions,
        "attn_mask": allowed[:, None],
        "source": torch.tensor(source, dtype=torch.long),
        "targets": torch.tensor([t for s in samples for t in s.tokens], dtype=torch.long),
        "cells": torch.tensor(cells, dtype=torch.long),
        "mask": mask,
        "old_logps": old,
        "finished": torch.tensor([s.finished for s in samples]),
    }


def on_grid(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flat per-token values [N] (in `cells` order) → the completion grid [B·k, C], 0 elsewhere."""
    grid = values.new_zeros(batch["mask"].numel()).index_put((batch["cells"],), values)
    return grid.view(batch["mask"].shape)


def group_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(y_i[j] | x, y_i[<j]) on the completion grid [B·k, C] (0 outside the mask), one forward
    of the G group rows; with `with_entropy` also the per-token entropy there (no gradient)."""
    out = selected_logprobs(
        model, batch["ids"], batch["source"], batch["targets"], positions=batch["positions"],
        attn_mask=batch["attn_mask"], with_entropy=with_entropy,
    )  # fmt: skip
    if with_entropy:
        return on_grid(out[0], batch), on_grid(out[1], batch)
    return on_grid(out, batch)


def group_rows_pay(samples: list[Sample], k: int, cfg) -> bool:
    """One row per group costs fewer training FLOPs than one row per sample: G rows of
    W_g = max(p + Σ c_i) positions whose attention reads all W_g keys, against B·k rows of
    W_r = max(p + c_i) under causal attention (half the keys on average)."""
    groups = [samples[g : g + k] for g in range(0, len(samples), k)]
    w_rows = max(len(s.prompt) + len(s.tokens) for s in samples)
    w_group = max(len(grp[0].prompt) + sum(len(s.tokens) for s in grp) for grp in groups)
    rows = len(samples) * w_rows * cfg.flops_per_token(w_rows, causal=True)
    return len(groups) * w_group * cfg.flops_per_token(w_group, causal=False) < rows


def rollout_batch(samples: list[Sample], k: int, pad_id: int, model: torch.nn.Module) -> dict:
    """The training batch of a rollout: `group_batch` where it pays (`group_rows_pay`) for an llmlab
    `Transformer`, else `rollout.rl_batch`'s one row per sample. `batch_logprobs` reads either."""
    cfg = getattr(model, "cfg", None)
    if hasattr(model, "lm_head") and hasattr(cfg, "flops_per_token") and group_rows_pay(samples, k, cfg):
        return group_batch(samples, k, pad_id)
    return rl_batch(samples, pad_id)


def batch_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (and entropies) of a `rollout_batch`, on the grid its mask is on."""
    if "cells" in batch:
        return group_logprobs(model, batch, with_entropy)
    return token_logprobs(model, batch["ids"], with_entropy=with_entropy)
