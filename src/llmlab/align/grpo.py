"""GRPO: k samples per prompt, rewards that can be checked, advantages relative to the group.

For prompt x with k completions y_1..y_k and rewards r_i (a sum of reward functions), the
advantage of every token of y_i is (Shao et al. 2024; TRL 1.16's `scale_rewards`):

    group:  A_i = (r_i − mean_g r) / (std_g r + 1e-4)       std with Bessel's correction
    batch:  A_i = (r_i − mean_g r) / (std_batch r + 1e-4)
    none:   A_i =  r_i − mean_g r

so Σ_i A_i = 0 in each group, and a group whose rewards are all equal has A = 0: no gradient.
With ρ_t = π_θ(y_t|·)/π_old(y_t|·) and ε_low = ε, ε_high (default ε), the per-token loss is

    ℓ_t = −min(ρ_t·A, clip(ρ_t, 1 − ε_low, 1 + ε_high)·A) + β·KL3_t,
    KL3_t = π_ref/π_θ − log(π_ref/π_θ) − 1  (≥ 0)

aggregated by `loss_type` (m = completion mask, B sequences, L = max_new_tokens):

    grpo     mean_i (Σ_t m ℓ / Σ_t m)        (each sequence's token mean; short answers weigh more)
    bnpo     Σ m ℓ / Σ m                     (one token mean over the local batch)
    dr_grpo  Σ m ℓ / (B · L)                 (Dr. GRPO: a constant normaliser, no length bias)
    dapo     Σ m ℓ / Σ m over the GLOBAL batch (DAPO; with the loop's count contract it is exact)

`grpo_loss` returns (Σ over what the type averages, the count, metrics), the loop's contract.
"""

from __future__ import annotations

import re

import torch

from llmlab.errors import UserError

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    """Advantages for a flat [B·k] reward tensor whose groups of k are contiguous (module docstring)."""
    if group_size < 2:
        raise UserError(f"grpo.k: {group_size} samples per prompt; GRPO needs k >= 2 to compare them")
    if scale_rewards not in SCALE_REWARDS:
        raise UserError(f"grpo.scale_rewards: '{scale_rewards}'; choose one of {', '.join(SCALE_REWARDS)}")
    if rewards.numel() % group_size:
        raise UserError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.view(-1, group_size)
    adv = (groups - groups.mean(1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        adv = adv / (groups.std(1, keepdim=True).expand_as(groups).reshape(-1) + STD_EPS)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + STD_EPS)
    return adv


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss_sum, count, metrics) on [B, T] per-token log-probs (policy, rollout-time, reference),
    advantages [B] and the completion mask [B, T]; loss = loss_sum / count (summed over micro-batches
    and ranks by the loop). Metrics: clip_ratio/low_mean, /high_mean, /region_mean, kl, entropy."""
    if loss_type not in GRPO_LOSS_TYPES:
        raise UserError(f"grpo.loss_type: '{loss_type}'; choose one of {', '.join(GRPO_LOSS_TYPES)}")
    eps_high = epsilon_high or epsilon
    m = mask.to(logps.dtype)
    adv = advantages[:, None].to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    metrics: dict[str, torch.Tensor] = {}
    n_tok = m.sum().clamp(min=1.0)
    if beta != 0.0:
        if ref_logps is None:
            raise UserError("grpo.beta > 0 needs reference log-probs")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
        metrics["kl"] = (kl.detach() * m).sum() / n_tok
    if entropy is not None:
        metrics["entropy"] = (entropy.detach() * m).sum() / n_tok
    low = ((ratio < 1 - epsilon) & (adv < 0)).to(m.dtype)
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(m.dtype)
    metrics["clip_ratio/low_mean"] = (low * m).sum().detach() / n_tok
    metrics["clip_ratio/high_mean"] = (high * m).sum().detach() / n_tok
    metrics["clip_ratio/region_mean"] = (((low + high) > 0).to(m.dtype) * m).sum().detach() / n_tok
    if loss_type == "grpo":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum(), torch.tensor(float(per_seq.shape[0])), metrics
    total = (per_token * m).sum()
    if loss_type == "dr_grpo":
        length = max_completion_length or mask.shape[1]
        return total, torch.tensor(float(mask.shape[0] * length)), metrics
    return total, m.sum(), metrics  # bnpo (one micro-batch) and dapo (the global token count)


# ---- built-in reward functions: (completions, answers, finished) -> rewards -----------------------

_INT = re.compile(r"^-?\d+$")


def exact_reward(completions: list[str], answers: list[str], finished: list[bool]) -> list[float]:
    """1 when the reply (surrounding whitespace stripped) is exactly the answer, else 0."""
    return [float(c.strip() == a.strip()) for c, a in zip(completions, answers)]


def format_reward(completions: list[str], answers: list[str], finished: list[bool]) -> list[float]:
    """1 when the reply ended with end-of-turn and is a bare number (the arithmetic task's format)."""
    return [float(f and bool(_INT.match(c.strip()))) for c, f in zip(completions, finished)]


REWARD_FUNCS = {"exact": exact_reward, "format": format_reward}
