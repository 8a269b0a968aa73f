"""RLHF with PPO: the per-token reward, GAE, whitening, the clipped policy and value losses, and
the KL coefficient (Ziegler et al. 2019; Ouyang et al. 2022; TRL's PPO).

All tensors are [B, T] on one grid with mask m = 1 on response tokens (contiguous per row).

Reward. The reward model scores the whole response once, at its last token; every response token
pays for drifting from the reference:
    r_t = −β·KL_t + m_t·[t is the last response token]·score
    KL_t (k1) = log π(y_t) − log π_ref(y_t)                     unbiased, any sign
    KL_t (k3) = (ρ_t − 1) − log ρ_t,  ρ_t = π_ref(y_t)/π(y_t)   unbiased, always ≥ 0 (Schulman 2020)
β is fixed, or adapted towards a target KL (Ziegler et al.):
    e = clip(KL/target − 1, −0.2, 0.2);   β ← β·(1 + e·n/horizon)   (n = responses in the batch)

GAE (Schulman et al. 2016), backwards over t, with values V_t from the value model:
    δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t,   A_t = δ_t + γλ·m_{t+1}·A_{t+1},   R_t = A_t + V_t
Advantages are whitened over the batch's response tokens: (A − mean) / sqrt(var + 1e-8), var
unbiased (TRL's `masked_whiten`).

Losses, with ρ_t = π_θ(y_t)/π_old(y_t) and ε, ε_v the clip ranges (token means over m):
    L_π = mean max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))
    L_V = mean ½·max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²)
On the first minibatch of a rollout batch π_θ = π_old, so ρ = 1 and nothing is clipped.
"""

from __future__ import annotations

import torch

from llmlab.errors import UserError


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel) variance of x over the mask."""
    n = mask.sum()
    var = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return var * n / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / sqrt(var + 1e-8) over the masked entries (0 elsewhere); the mean is added back
    when not shift_mean (how TRL whitens rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate on the sampled tokens: k1 or k3 (module docstring)."""
    if estimator == "k1":
        return logps - ref_logps
    if estimator == "k3":
        log_rho = ref_logps - logps
        return torch.expm1(log_rho) - log_rho
    raise UserError(f"rlhf.kl_estimator: '{estimator}'; choose k1 or k3")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = −β·KL_t on response tokens, plus the score at each row's last response token."""
    m = mask.to(kl.dtype)
    r = -kl_coef * kl * m
    last = (m * torch.arange(m.shape[1], device=m.device)).argmax(1)  # the last masked column
    return r.scatter_add(1, last[:, None], scores[:, None].to(r.dtype))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [B, T] by generalised advantage estimation (module docstring); 0 off
    the mask."""
    m = mask.to(values.dtype)
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        m_next = m[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        v_next = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * m_next * v_next - values[:, t]
        last = (delta + gamma * lam * m_next * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(Σ_t m·max(−A·ρ, −A·clip(ρ)), Σ m, metrics): the clipped surrogate, summed for the loop.
    Metrics: policy/clipfrac, policy/approxkl (½·mean (log ρ)²), val/ratio (mean ρ),
    policy/ratio_dev (max |ρ − 1|)."""
    m = mask.to(logps.dtype)
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = torch.max(pg1, pg2)
    d = ratio.detach()
    metrics = {
        "policy/clipfrac": masked_mean((pg2 > pg1).to(m.dtype), m).detach(),
        "policy/approxkl": masked_mean(0.5 * log_ratio.detach() ** 2, m),
        "val/ratio": masked_mean(d, m),
        "policy/ratio_dev": ((d - 1).abs() * m).max(),
    }
    return (loss * m).sum(), m.sum(), metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(Σ_t m·½·max((V − R)², (V_clipped − R)²), Σ m, {"val/clipfrac"})."""
    m = mask.to(values.dtype)
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    l1, l2 = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * torch.max(l1, l2)
    return (loss * m).sum(), m.sum(), {"val/clipfrac": masked_mean((l2 > l1).to(m.dtype), m).detach()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(R − V)/Var(R) over the mask: 1 = the critic predicts the returns, ≤ 0 = no better than a constant."""
    return 1 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-12)


class KLController:
    """β of the KL penalty: fixed, or adapted towards `target` over `horizon` responses."""

    def __init__(self, value: float, adaptive: bool = False, target: float = 6.0, horizon: int = 10000):
        self.value, self.adaptive, self.target, self.horizon = value, adaptive, target, horizon

    def update(self, current_kl: float, n_responses: int) -> None:
        if not self.adaptive:
            return
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_responses / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, d: dict) -> None:
        self.value = float(d["value"])
