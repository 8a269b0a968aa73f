"""Recipe sections of the alignment stages: [reward], [dpo], [rlhf] (PPO) and [grpo].

The dataclasses import nothing from llmlab.config (which imports them); `align_rules()` is called
by llmlab.config once its rule helpers exist, and returns each field's allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AlignSection:
    """The speedrun's alignment stages (reward, dpo, rlhf, grpo, aligned_eval) after SFT."""

    stages: bool = True  # false: leave the five alignment stages out of the speedrun
    eval_limit: int = 100  # held-out arithmetic questions the aligned evaluation asks each model
    frontier: bool = False  # the reward–KL frontier + over-optimisation sweep (6 more trainings; slow)
    frontier_prompts: int = (
        128  # Shakespeare prefixes to sample preference pairs from (half as many held out)
    )
    frontier_prefix: int = 8  # tokens per prefix
    frontier_new_tokens: int = 24
    frontier_betas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.5])  # DPO's β
    frontier_kl_coefs: list[float] = field(default_factory=lambda: [0.02, 0.1, 0.5])  # PPO's β (and 0)
    seed: int = 1337


@dataclass
class RewardSection:
    """`llmlab reward`: a Bradley–Terry reward model on preference pairs, from the SFT model."""

    data: str = "builtin:arithmetic"  # a preference .jsonl, or builtin:TASK (pairs from a synthetic task)
    steps: int = 0  # 0 = epochs × pairs / batch_size
    epochs: float = 2.0
    batch_size: int = 16  # pairs per step
    lr: float = 1e-3  # sized for the CPU demo's 2.4M-parameter model; larger models want ~10x lower
    min_lr: float = 1e-4
    warmup: int = 10
    schedule: str = "cosine"
    weight_decay: float = 0.0
    margin: bool = False  # use the pairs' "margin" field: −log σ(r_c − r_r − margin)
    center_coef: float = 0.0  # c · mean((r_c + r_r)²) keeps rewards centred on 0
    val_fraction: float = 0.1
    seed: int = 1337
    keep_ties: bool = False  # train on judgements labelled tie / both_bad too (chosen = answer A)


@dataclass
class DPOSection:
    """`llmlab dpo`: direct preference optimisation of the SFT model (reference = its frozen copy)."""

    data: str = "builtin:arithmetic"
    beta: float = 0.1
    loss_type: str = "sigmoid"  # one of llmlab.align.dpo.LOSS_TYPES
    label_smoothing: float = 0.0  # robust / exo_pair / aot only
    sft_weight: float = 0.0  # > 0 adds the SFT term (chosen NLL per token) with this weight
    steps: int = 0
    epochs: float = 2.0
    batch_size: int = 16
    lr: float = 3e-4  # the demo's model; larger models want ~10x lower
    min_lr: float = 3e-5
    warmup: int = 10
    schedule: str = "cosine"
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 1337
    keep_ties: bool = False  # train on judgements labelled tie / both_bad too (chosen = answer A)


@dataclass
class RLHFSection:
    """`llmlab rlhf`: PPO against a reward model with a per-token KL penalty to the reference."""

    prompts: str = "builtin:arithmetic"  # prompts: a preference/prompt .jsonl or builtin:TASK
    reward_model: str = ""  # a model directory with a reward head ("" = the speedrun's reward stage)
    steps: int = 20  # rollout batches
    batch_size: int = 16  # prompts per rollout batch
    max_new_tokens: int = 16
    temperature: float = 1.0
    ppo_epochs: int = 2  # passes over each rollout batch
    minibatches: int = 2  # minibatches per pass
    lr: float = 3e-5  # RL steps are noisy: on the demo's model 3e-4 drifted (KL up, score flat)
    value_lr_scale: float = 1.0  # the value head's lr = lr · value_lr_scale
    kl_coef: float = 0.05  # β of r_t = −β·KL_t (+ score at the end); the initial value when adaptive
    kl_estimator: str = "k1"  # k1 = log π/π_ref, k3 = (ρ − 1) − log ρ with ρ = π_ref/π (≥ 0)
    adaptive_kl: bool = False  # Ziegler et al.'s controller towards target_kl
    target_kl: float = 6.0
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response that never ends
    whiten_rewards: bool = False
    seed: int = 1337


@dataclass
class GRPOSection:
    """`llmlab grpo`: k samples per prompt, group-relative advantages, verifiable rewards."""

    prompts: str = "builtin:arithmetic"
    rewards: list[str] = field(default_factory=lambda: ["exact"])  # built in: exact, format
    k: int = 8  # samples per prompt (one prefill, the engine's n)
    steps: int = 20
    batch_size: int = 4  # prompts per step (k·batch_size completions)
    max_new_tokens: int = 16
    temperature: float = 1.0
    lr: float = 3e-5  # on a small SFT model 3e-4 halved held-out accuracy in 20 steps
    loss_type: str = "dapo"  # grpo, bnpo, dr_grpo, dapo
    scale_rewards: str = "group"  # group, batch, none
    epsilon: float = 0.2
    epsilon_high: float = 0.0  # 0 = epsilon
    beta: float = 0.0  # k3 KL to the reference (0: no reference loaded)
    iterations: int = 1  # updates per batch of rollouts (μ)
    seed: int = 1337


def align_rules() -> dict[type, dict]:
    """RULES entries for the four sections (llmlab.config adds them to its RULES)."""
    from llmlab.align.dpo import LOSS_TYPES
    from llmlab.align.grpo import GRPO_LOSS_TYPES, REWARD_FUNCS, SCALE_REWARDS
    from llmlab.rules import (
        BOOL,
        SEED,
        Rule,
        above,
        at_least,
        each,
        fine_tuning_rules,
        free,
        one_of,
    )

    data = free("a preference .jsonl or builtin:TASK; checked when the stage loads it")
    return {
        AlignSection: {
            "stages": BOOL,
            "eval_limit": at_least(1),
            "frontier": BOOL,
            "frontier_prompts": at_least(2),
            "frontier_prefix": at_least(1),
            "frontier_new_tokens": at_least(1),
            "frontier_betas": each(above(0)),
            "frontier_kl_coefs": each(above(0)),
            "seed": SEED,
        },
        RewardSection: {
            **fine_tuning_rules(),
            "data": data,
            "margin": BOOL,
            "center_coef": at_least(0),
            "keep_ties": BOOL,
        },
        DPOSection: {
            **fine_tuning_rules(),
            "data": data,
            "beta": above(0, "the KL strength"),
            "loss_type": one_of(LOSS_TYPES),
            "label_smoothing": Rule(
                lambda v: isinstance(v, int | float) and 0 <= v < 0.5, lambda: "in [0, 0.5)"
            ),
            "sft_weight": at_least(0),
            "keep_ties": BOOL,
        },
        RLHFSection: {
            "prompts": data,
            "reward_model": free("a reward model directory; checked when PPO loads it"),
            "steps": at_least(1),
            "batch_size": at_least(2),
            "max_new_tokens": at_least(1),
            "temperature": above(0),
            "ppo_epochs": at_least(1),
            "minibatches": at_least(1),
            "lr": above(0),
            "value_lr_scale": above(0),
            "kl_coef": at_least(0),
            "kl_estimator": one_of(("k1", "k3")),
            "adaptive_kl": BOOL,
            "target_kl": above(0),
            "kl_horizon": at_least(1),
            "gamma": Rule(lambda v: isinstance(v, int | float) and 0 <= v <= 1, lambda: "in [0, 1]"),
            "lam": Rule(lambda v: isinstance(v, int | float) and 0 <= v <= 1, lambda: "in [0, 1]"),
            "cliprange": above(0),
            "cliprange_value": above(0),
            "vf_coef": at_least(0),
            "missing_eos_penalty": at_least(0),
            "whiten_rewards": BOOL,
            "seed": SEED,
        },
        GRPOSection: {
            "prompts": data,
            "rewards": each(one_of(tuple(REWARD_FUNCS))),
            "k": at_least(2, "GRPO compares k samples of one prompt"),
            "steps": at_least(1),
            "batch_size": at_least(1),
            "max_new_tokens": at_least(1),
            "temperature": above(0),
            "lr": above(0),
            "loss_type": one_of(GRPO_LOSS_TYPES),
            "scale_rewards": one_of(SCALE_REWARDS),
            "epsilon": above(0),
            "epsilon_high": at_least(0, "0 = epsilon"),
            "beta": at_least(0, "0 = no KL term, no reference model"),
            "iterations": at_least(1),
            "seed": SEED,
        },
    }
