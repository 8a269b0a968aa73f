"""Direct preference optimisation and its family: optimise the preferences without a reward model.

For a pair (x, y_c ≻ y_r), with summed completion log-probs log π(y|x) under the policy and the
frozen reference, the implicit rewards are

    h_c = log π(y_c|x) − log π_ref(y_c|x),   h_r = log π(y_r|x) − log π_ref(y_r|x),   Δ = h_c − h_r

and each loss_type is one formula in Δ, h_c, h_r (σ = logistic, β > 0, ε = label_smoothing,
|y| = completion tokens). These are TRL 1.16's definitions (`DPOTrainer._compute_loss`, reverse-KL
scores), term for term:

    sigmoid       −log σ(βΔ)                                         (DPO, Rafailov et al. 2023)
    hinge         relu(1 − βΔ)                                       (SLiC)
    ipo           (h_c/|y_c| − h_r/|y_r| − 1/(2β))²                  (IPO, on length-averaged ratios)
    sigmoid_norm  −log σ(β(h_c/|y_c| − h_r/|y_r|))
    robust        (−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)) / (1 − 2ε)       (rDPO)
    exo_pair      σ(βΔ)(log σ(βΔ) − log(1−ε)) + σ(−βΔ)(log σ(−βΔ) − log ε)   (EXO, needs ε > 0)
    nca_pair      −log σ(βh_c) − ½ log σ(−βh_c) − ½ log σ(−βh_r)
    bco_pair      −log σ(βh_c) − log σ(−βh_r)
    sppo_hard     (h_c − 1/(2β))² + (h_r + 1/(2β))²
    aot           −(1−ε) log σ(βδ) − ε log σ(−βδ),  δ = sort(log π_c − log π_r) − sort(ref's)
    aot_unpaired  the same with δ = sort(h_c) − sort(h_r)
    apo_zero      1 − σ(βh_c) + σ(βh_r)
    apo_down      σ(βh_c) + 1 − σ(β(h_c − h_r))
    discopop      (1 − m)·(−log σ(βΔ)) + m·exp(−βΔ),  m = σ(βΔ/τ)
    sft           −Σ log π(y_c|x) / Σ|y_c|        (the chosen completions' NLL per token)

The loss is Σ_types w · mean over pairs. Metrics as TRL names them: rewards/chosen = mean βh_c,
rewards/rejected = mean βh_r, rewards/accuracies = mean[βh_c > βh_r] (strict), rewards/margins =
mean β(h_c − h_r), logps/chosen, logps/rejected = mean summed policy log-probs. At initialisation
(π = π_ref) Δ = 0, so the sigmoid loss is ln 2 and every margin is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llmlab.errors import UserError

LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "sigmoid_norm", "robust", "exo_pair", "nca_pair", "bco_pair",
    "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
)  # fmt: skip
LENGTH_NORMALISED = ("ipo", "sigmoid_norm", "sft")


def check_dpo_args(beta: float, loss_types: Sequence[str], label_smoothing: float) -> None:
    """One-line `UserError`s for β ≤ 0, an unknown type, exo_pair without smoothing, ε ∉ [0, 0.5)."""
    if not beta > 0:
        raise UserError(f"dpo.beta: {beta} must be > 0 (the KL strength; 0.1 is usual)")
    for t in loss_types:
        if t not in LOSS_TYPES:
            raise UserError(f"dpo.loss_type: unknown loss type '{t}'; choose from {', '.join(LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise UserError(f"dpo.label_smoothing: {label_smoothing} must be in [0, 0.5)")
    if "exo_pair" in loss_types and label_smoothing == 0.0:
        raise UserError("dpo.label_smoothing: exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")


def _per_pair_loss(
    t: str,
    hc: torch.Tensor,
    hr: torch.Tensor,
    logps: tuple[torch.Tensor, ...],
    beta: float,
    eps: float,
    tau: float,
    lengths: tuple[torch.Tensor | None, torch.Tensor | None],
) -> torch.Tensor:
    """The per-pair loss of one type (see the module table)."""
    pc, pr, rc, rr = logps
    delta = beta * (hc - hr)
    if t == "sigmoid":
        return -F.logsigmoid(delta)
    if t == "hinge":
        return torch.relu(1 - delta)
    if t in ("ipo", "sigmoid_norm", "sft"):
        lc, lr = (x.to(hc.dtype).clamp(min=1.0) for x in lengths)  # type: ignore[union-attr]
        if t == "sft":
            return (-pc.sum() / lc.sum()).expand(pc.shape[0])
        avg = hc / lc - hr / lr
        return (avg - 1 / (2 * beta)) ** 2 if t == "ipo" else -F.logsigmoid(beta * avg)
    if t == "robust":
        return (-(1 - eps) * F.logsigmoid(delta) + eps * F.logsigmoid(-delta)) / (1 - 2 * eps)
    if t == "exo_pair":
        e = torch.tensor(eps, dtype=hc.dtype, device=hc.device)
        return torch.sigmoid(delta) * (F.logsigmoid(delta) - torch.log1p(-e)) + torch.sigmoid(-delta) * (
            F.logsigmoid(-delta) - torch.log(e)
        )
    if t == "nca_pair":
        return -F.logsigmoid(beta * hc) - 0.5 * F.logsigmoid(-beta * hc) - 0.5 * F.logsigmoid(-beta * hr)
    if t == "bco_pair":
        return -F.logsigmoid(beta * hc) - F.logsigmoid(-beta * hr)
    if t == "sppo_hard":
        return (hc - 0.5 / beta) ** 2 + (hr + 0.5 / beta) ** 2
    if t in ("aot", "aot_unpaired"):
        if t == "aot":
            d = torch.sort(pc - pr, dim=0)[0] - torch.sort(rc - rr, dim=0)[0]
        else:
            d = torch.sort(hc, dim=0)[0] - torch.sort(hr, dim=0)[0]
        return -F.logsigmoid(beta * d) * (1 - eps) - F.logsigmoid(-beta * d) * eps
    if t == "apo_zero":
        return 1 - torch.sigmoid(beta * hc) + torch.sigmoid(beta * hr)
    if t == "apo_down":
        return torch.sigmoid(beta * hc) + 1 - torch.sigmoid(beta * (hc - hr))
    if t == "discopop":
        m = torch.sigmoid(delta / tau)
        return -F.logsigmoid(delta) * (1 - m) + torch.exp(-delta) * m
    raise UserError(f"dpo.loss_type: unknown loss type '{t}'; choose from {', '.join(LOSS_TYPES)}")


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str | Sequence[str] = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    loss_weights: Sequence[float] | None = None,
    discopop_tau: float = 0.05,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, metrics) for [P] summed completion log-probs of P pairs; see the module docstring.

    `loss_type` is one name or a list combined as Σ w_i · loss_i (`loss_weights`, default 1 each),
    e.g. ["sigmoid", "sft"] for DPO with an SFT term. The length-normalised types (ipo,
    sigmoid_norm, sft) need `chosen_lengths`/`rejected_lengths` (completion tokens per pair)."""
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(types)
    if len(weights) != len(types):
        raise UserError(f"dpo.loss_weights: {len(weights)} weights for {len(types)} loss types")
    check_dpo_args(beta, types, label_smoothing)
    if any(t in LENGTH_NORMALISED for t in types) and (chosen_lengths is None or rejected_lengths is None):
        raise UserError(f"dpo_loss: loss types {LENGTH_NORMALISED} need chosen_lengths and rejected_lengths")
    hc, hr = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    logps = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = chosen_logps.new_zeros(())
    for t, w in zip(types, weights, strict=True):
        per_pair = _per_pair_loss(
            t, hc, hr, logps, beta, label_smoothing, discopop_tau, (chosen_lengths, rejected_lengths)
        )
        loss = loss + per_pair.mean() * w
    rc, rr = beta * hc.detach(), beta * hr.detach()
    metrics = {
        "rewards/chosen": rc.mean(),
        "rewards/rejected": rr.mean(),
        "rewards/accuracies": (rc > rr).to(rc.dtype).mean(),
        "rewards/margins": (rc - rr).mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
    return loss, metrics
