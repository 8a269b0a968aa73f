"""The optimizers (AdamW; Muon for the hidden matrices) and the learning-rate schedules.

AdamW (Loshchilov & Hutter), per parameter θ with gradient g at step t:
    m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   m̂ = m/(1−β₁ᵗ),   v̂ = v/(1−β₂ᵗ)
    θ ← θ − η_t · (m̂ / (√v̂ + ε) + λθ)
Decay λ applies to the 2-D weight matrices (projections, embeddings) only; norm gains are left
alone (decaying a gain towards 0 fights the normalisation it scales).

Muon (Keller Jordan, 2024; `Muon` below, as torch.optim.Muon), per hidden matrix W (rows A, columns B) with gradient G:
    B_t ← μ·B_{t−1} + (1 − μ)·G,   M = (1 − μ)·G + μ·B_t        (Nesterov momentum, μ = 0.95)
    O = NS₅(M) ≈ U·Vᵀ  where M = U·Σ·Vᵀ                          (the nearest semi-orthogonal matrix)
    W ← W·(1 − η_t·λ) − η_t·√max(1, A/B)·O
NS₅ is five steps of the quintic Newton–Schulz iteration X ← a·X + (b·XXᵀ + c·(XXᵀ)²)·X from
X₀ = M/‖M‖_F, (a, b, c) = (3.4445, −4.7750, 2.0315): it pushes every singular value towards 1 without
an SVD (it is blind to M's scale, so the momentum's form only sets directions). The update moves
every direction of W by the same amount, where Adam's is dominated by the few directions with large
gradients; in recipes/cpu-demo.toml's midtraining 1,000 Muon steps copy a question's operands
into the tool call where 3,000 AdamW steps mostly did not (docs/speedrun.md). Muon is for matrices
that map hidden states to hidden states; the embedding table, the LM head (tied to it or not),
1-row heads and the norm gains stay on AdamW at η_t, the Muon groups run at η_t · muon_lr / lr
(the same schedule).

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
from llmlab.rules import OPTIMIZERS

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


def muon_split(model: torch.nn.Module, groups: list[dict]) -> tuple[list[dict], list[dict]]:
    """Each group split in two, (Muon groups, AdamW groups): a parameter goes to Muon when it is a
    2-D matrix with more than one row and column that is neither an embedding table nor an LM head."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    tables |= {id(p) for name, p in model.named_parameters() if name.endswith("lm_head.weight")}

    def hidden(p: torch.Tensor) -> bool:
        return p.dim() == 2 and min(p.shape) > 1 and id(p) not in tables

    muon, adamw = [], []
    for g in groups:
        for keep, into in ((True, muon), (False, adamw)):
            params = [p for p in g["params"] if hidden(p) == keep]
            if params:
                into.append({**g, "params": params})
    return muon, adamw


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(m: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """NS₅(M) of the module docstring, iterated on the wide orientation (XXᵀ is the smaller Gram
    matrix). In bfloat16 on CUDA, as torch.optim.Muon; in float32 elsewhere, because a CPU without
    bfloat16 units (AVX2 only) emulates it: one iteration on a 192 × 512 matrix took 43 ms in
    bfloat16 and 1.0 ms in float32 on a quiet 2-core AMD EPYC, where a midtraining step of the CPU demo
    took over 15 s with torch's Muon and 0.8 s with this one."""
    a, b, c = NS_COEFFICIENTS
    x = m.to(torch.bfloat16 if m.device.type == "cuda" else torch.float32)
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon over 2-D matrices, the update of the module docstring: torch.optim.Muon's (same momentum,
    decay, √max(1, A/B) scale and state, so its checkpoints load), with `newton_schulz5` choosing
    the precision by device."""

    def __init__(self, params, lr: float, momentum: float = 0.95, weight_decay: float = 0.1) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            mu, lr = group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mu)
                update = newton_schulz5(p.grad.lerp(buf, mu))  # Nesterov: (1 − μ)·G + μ·B_t
                rows, cols = p.shape
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1, rows / cols)))


def make_optimizers(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    groups: list[dict] | None = None,
    optimizer: str = "adamw",
    muon_lr: float = 0.02,
) -> list[torch.optim.Optimizer]:
    """The optimizers a run steps together: [AdamW] over all of `groups`, or with "muon" [Muon over
    the hidden matrices, AdamW over the rest] (see the module docstring). Every group's lr is set each
    step to lr_t · lr_scale; a Muon group's lr_scale carries the muon_lr / lr factor."""
    if optimizer not in OPTIMIZERS:
        raise UserError(
            f"train.optimizer: unknown optimizer '{optimizer}'; choose one of {', '.join(OPTIMIZERS)}"
        )
    groups = groups if groups is not None else param_groups(model, weight_decay)
    if optimizer == "adamw":
        return [make_optimizer(model, lr, weight_decay, groups=groups)]
    muon_groups, adamw_groups = muon_split(model, groups)
    if any(type(p.data) is not torch.Tensor for g in muon_groups for p in g["params"]):
        raise UserError(
            "train.optimizer = 'muon' needs whole matrices; FSDP shards them "
            "(use train.distributed = 'ddp', or train.optimizer = 'adamw')"
        )
    for g in muon_groups:
        g["lr_scale"] = g.get("lr_scale", 1.0) * muon_lr / lr
    out: list[torch.optim.Optimizer] = []
    if muon_groups:
        out.append(Muon(muon_groups, lr=muon_lr))
    if adamw_groups:
        out.append(make_optimizer(model, lr, weight_decay, groups=adamw_groups))
    return out


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
