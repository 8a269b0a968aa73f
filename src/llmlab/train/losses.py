"""The pretraining objective and its evaluation in bits per byte.

Next-token cross-entropy over the targets that are not masked (target == IGNORE_INDEX):
    L = −(1/|M|) Σ_{t∈M} log softmax(z_t)[y_t]          (nats per token)
Minimising L maximises log p(x) = Σ_t log p(x_t | x_<t).

Bits per byte make models with different tokenizers comparable:
    bpb = (Σ_t −log p(y_t | ·)) / (ln 2 · Σ_t bytes(y_t)) = L · |M| / (ln 2 · bytes)
where bytes(y) is the UTF-8 length of token y (0 for special tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy in nats. logits [B, T, V] (any float dtype; computed in fp32),
    targets [B, T] with `ignore_index` for masked positions."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction=reduction,
    )


def bits_per_byte(nats_sum: float, n_bytes: float) -> float:
    """Σ nats / (ln 2 · Σ bytes); inf when there are no bytes."""
    return nats_sum / (math.log(2) * n_bytes) if n_bytes > 0 else math.inf


def lm_loss_sum(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **model_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{t∈M} −log p(y_t | x_≤t), the kept targets y[M] flattened), M = the targets that are not
    IGNORE_INDEX. When some are masked (SFT's prompt, the induction rows' unpredictable ids) only
    the kept positions go through the LM head (`selected_logprobs`); otherwise the full logits and
    `cross_entropy`. `model_kwargs` (packed rows' positions and mask) go to the model."""
    flat = y.flatten()
    if (flat == IGNORE_INDEX).any():
        from llmlab.model.logprobs import selected_logprobs

        source = (flat != IGNORE_INDEX).nonzero()[:, 0]
        return -selected_logprobs(model, x, source, flat[source], **model_kwargs).sum(), flat[source]
    return cross_entropy(model(x, **model_kwargs), y, reduction="sum"), flat


def lm_loss(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, int, dict]:
    """The loop's loss function for pretraining: batch = (inputs, targets) [B, T] each →
    (Σ_t −log p(y_t), number of unmasked targets, {}): the loop divides by the global count."""
    loss, kept = lm_loss_sum(model, *batch)
    return loss, kept.numel(), {}
