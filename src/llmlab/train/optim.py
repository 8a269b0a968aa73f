"""AdamW with weight decay on matrices only, and the learning-rate schedules.

AdamW (Loshchilov & Hutter), per parameter θ with gradient g at step t:
    m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   m̂ = m/(1−β₁ᵗ),   v̂ = v/(1−β₂ᵗ)
    θ ← θ − η_t · (m̂ / (√v̂ + ε) + λθ)
Decay λ applies to the 2-D weight matrices (projections, embeddings) only; norm gains are left
alone (decaying a gain towards 0 fights the normalisation it scales).

Schedules give η_t for step t ∈ [0, steps):
    warmup:   η_t = η · (t + 1) / warmup                          for t < warmup
    cosine:   η_t = η_min + ½(η − η_min)(1 + cos(π·p))            p = (t − warmup)/(steps − warmup)
    wsd:      η_t = η for p < 1 − decay_frac, then linear to η_min over the last decay_frac
              (warmup-stable-decay; a run can be extended from any stable-phase checkpoint)
    constant: η_t = η after warmup
"""

from __future__ import annotations

import math

import torch

from llmlab.errors import UserError

SCHEDULES = ("cosine", "wsd", "constant")
WSD_DECAY_FRACTION = 0.2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and vectors (not). Tied tensors are listed once."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    groups: list[dict] | None = None,
) -> torch.optim.AdamW:
    """AdamW over `groups` (default `param_groups`), with the fused kernel (one pass over each
    parameter's memory instead of several) on CUDA and CPU; the default multi-tensor kernel for
    sharded (FSDP2) params. A group may carry "lr_scale" (the loop sets its lr to lr_t · lr_scale)."""
    groups = groups if groups is not None else param_groups(model, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cuda", "cpu") and type(p.data) is torch.Tensor for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if fused else None)


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, steps: int, schedule: str = "cosine") -> float:
    """The learning rate η_t of the module docstring."""
    if schedule not in SCHEDULES:
        raise UserError(
            f"train.schedule: unknown schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}"
        )
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or steps <= warmup:
        return lr
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    if schedule == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))
    # wsd
    start = 1.0 - WSD_DECAY_FRACTION
    if p < start:
        return lr
    return lr + (min_lr - lr) * (p - start) / WSD_DECAY_FRACTION
