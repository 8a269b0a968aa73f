"""GRPO's training batch: a prompt's k samples in one row that reads the prompt once, or one row per
sample; in both only the completion tokens are scored.

The last token of a completion (often <|end|>) is a target that nothing reads as an input, so a
completion y of c tokens takes c − 1 input slots. Group layout (`group_batch`), row g:

    slots     prompt x (p) | y_1[:-1] (c_1 − 1) | y_2[:-1] (c_2 − 1) | …    right-padded
    position  0 … p−1      | p … p+c_1−2        | p … p+c_2−2        | …    (each y_i restarts at p)
    mask      causal, except that no y_i query sees a y_j key (j ≠ i)

Every input token of y_i sees exactly x and its own prefix, at the positions it has in a row of its
own, so each hidden state is the one of a row per sample up to float summation order, while x runs
through the trunk once per group instead of k times (the arithmetic task at k = 8: ~70 slots per
group instead of 8 rows of ~20). With o_i = Σ_{l<i} (c_l − 1), token j of y_i is predicted at slot

    s(i, 0) = p − 1,    s(i, j) = p + o_i + j − 1   (1 ≤ j < c_i)

Rows layout (`sample_rows_batch`): row i is x + y_i[:-1] under the causal mask, s(i, j) = p − 1 + j.
Either way positions stay below p + c − 1 ≤ the context (the rollout stops a completion at the
context, p + c ≤ context; a row one longer, which the engine alone allows, scores alike), and only
the scored slots go through the LM head (`selected_logprobs`).

Per-token tensors (π_old, π_ref, the mask, what `grpo_loss` reads) live on one completion grid
[B·k, C], C = the longest completion: cell (i, j) is token j of completion i, so both layouts give
the same loss, gradient and metrics (tests/align/test_grpo_batch.py). The group row's attention
reads all of its W_g keys (a dense mask), so long completions make it dearer than what it saves:
`rollout_batch` takes it only where its training FLOPs (`ModelConfig.flops_per_token`) are lower.
"""

from __future__ import annotations

import torch

from llmlab.align.rollout import Sample
from llmlab.model.logprobs import selected_logprobs


def _groups(samples: list[Sample], k: int) -> list[list[Sample]]:
    if not samples or len(samples) % k:
        raise ValueError(f"group_batch: {len(samples)} samples do not split into groups of {k}")
    groups = [samples[g : g + k] for g in range(0, len(samples), k)]
    if any(s.prompt != grp[0].prompt or not s.prompt for grp in groups for s in grp):
        raise ValueError("group_batch: the samples of a group must share one non-empty prompt")
    return groups


def _batch(samples: list[Sample], ids: torch.Tensor, source: list[int], **layout) -> dict[str, torch.Tensor]:
    """The layout's inputs plus what both layouts share: the scored slots, their targets and cells,
    and the completion grid's mask and π_old."""
    C = max(1, max(len(s.tokens) for s in samples))
    mask, old = torch.zeros(len(samples), C), torch.zeros(len(samples), C)
    for i, s in enumerate(samples):
        mask[i, : len(s.tokens)] = 1
        old[i, : len(s.tokens)] = torch.tensor(s.logprobs)
    return {
        "ids": ids,
        **layout,
        "source": torch.tensor(source, dtype=torch.long),
        "targets": torch.tensor([t for s in samples for t in s.tokens], dtype=torch.long),
        "cells": torch.tensor([i * C + j for i, s in enumerate(samples) for j in range(len(s.tokens))]),
        "mask": mask,
        "old_logps": old,
        "finished": torch.tensor([s.finished for s in samples]),
    }


def group_batch(samples: list[Sample], k: int, pad_id: int) -> dict[str, torch.Tensor]:
    """{"ids", "positions" [G, W], "attn_mask" [G, 1, W, W] (True = may attend), "source", "targets",
    "cells" [N] (scored slots in the flat [G·W], their tokens, their flat cells of the grid), "mask",
    "old_logps" [B·k, C] (the grid; old_logps nan where the engine recorded none: stop tokens),
    "finished" [B·k]} for samples grouped contiguously by prompt, k each (module docstring)."""
    groups = _groups(samples, k)
    width = max(len(grp[0].prompt) + sum(max(0, len(s.tokens) - 1) for s in grp) for grp in groups)
    G = len(groups)
    ids = torch.full((G, width), pad_id, dtype=torch.long)
    positions = torch.zeros((G, width), dtype=torch.long)
    allowed = torch.ones((G, width, width), dtype=torch.bool).tril()
    source: list[int] = []
    for g, grp in enumerate(groups):
        prompt = grp[0].prompt
        p = off = len(prompt)  # off: the next completion's first slot
        ids[g, :p], positions[g, :p] = torch.tensor(prompt), torch.arange(p)
        for s in grp:
            fed = s.tokens[:-1]
            if fed:
                ids[g, off : off + len(fed)] = torch.tensor(fed)
                positions[g, off : off + len(fed)] = torch.arange(p, p + len(fed))
                allowed[g, off : off + len(fed), p:off] = False  # no earlier completion of the group
            source += [g * width + (p - 1 if j == 0 else off + j - 1) for j in range(len(s.tokens))]
            off += len(fed)
    return _batch(samples, ids, source, positions=positions, attn_mask=allowed[:, None])


def sample_rows_batch(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """One causal row per sample, x + y[:-1] right-padded; the same keys as `group_batch` but
    "positions" and "attn_mask"."""
    width = max(len(s.prompt) + max(0, len(s.tokens) - 1) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    source: list[int] = []
    for i, s in enumerate(samples):
        row = s.prompt + s.tokens[:-1]
        ids[i, : len(row)] = torch.tensor(row)
        source += [i * width + len(s.prompt) - 1 + j for j in range(len(s.tokens))]
    return _batch(samples, ids, source)


def on_grid(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token values [N] (in `cells` order) → the completion grid [B·k, C], 0 elsewhere."""
    grid = values.new_zeros(batch["mask"].numel()).index_put((batch["cells"],), values)
    return grid.view(batch["mask"].shape)


def group_rows_pay(samples: list[Sample], k: int, cfg) -> bool:
    """One row per group costs fewer training FLOPs than one row per sample: G rows of W_g slots whose
    attention reads all W_g keys, against B·k rows of W_r slots under the causal mask (half the keys
    on average)."""
    groups = _groups(samples, k)
    w_rows = max(len(s.prompt) + max(0, len(s.tokens) - 1) for s in samples)
    w_group = max(len(grp[0].prompt) + sum(max(0, len(s.tokens) - 1) for s in grp) for grp in groups)
    rows = len(samples) * w_rows * cfg.flops_per_token(w_rows, causal=True)
    return len(groups) * w_group * cfg.flops_per_token(w_group, causal=False) < rows


def _has_lm_head(model: torch.nn.Module) -> bool:
    inner = getattr(model, "module", model)  # DDP
    return hasattr(getattr(inner, "_orig_mod", inner), "lm_head")  # torch.compile


def rollout_batch(samples: list[Sample], k: int, pad_id: int, model: torch.nn.Module) -> dict:
    """The training batch of a rollout: `group_batch` where it pays (`group_rows_pay`) for an llmlab
    `Transformer`, else `sample_rows_batch`. `batch_logprobs` reads either."""
    cfg = getattr(model, "cfg", None)
    if _has_lm_head(model) and hasattr(cfg, "flops_per_token") and group_rows_pay(samples, k, cfg):
        return group_batch(samples, k, pad_id)
    return sample_rows_batch(samples, pad_id)


def batch_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(y_i[j] | x, y_i[<j]) on the completion grid [B·k, C] (0 outside the mask), one forward of
    the batch's rows; with `with_entropy` also the per-token entropy there (no gradient)."""
    if _has_lm_head(model):
        out = selected_logprobs(
            model, batch["ids"], batch["source"], batch["targets"], positions=batch.get("positions"),
            attn_mask=batch.get("attn_mask"), with_entropy=with_entropy,
        )  # fmt: skip
    else:  # e.g. an imported GPT-2 network (rows layout only): its full logits
        logp = model(batch["ids"]).float().log_softmax(-1).flatten(0, 1)[batch["source"]]
        lp = logp.gather(-1, batch["targets"][:, None])[:, 0]
        out = (lp, -(logp.exp() * logp).sum(-1).detach()) if with_entropy else lp
    if with_entropy:
        return on_grid(out[0], batch), on_grid(out[1], batch)
    return on_grid(out, batch)
