"""`rlhf(recipe, policy_dir, reward_dir, out_dir)`: PPO against a reward model on the one loop.

Models: the policy π_θ (from SFT), the frozen reference π_ref (its copy), the frozen reward model,
and a value model V — a separate network initialised from the reward model (trunk + a fresh
scalar head), as in Ouyang et al. and TRL. Separate, not a head on the policy's trunk: with one
shared trunk the value loss's gradient moves the policy's features (and the reverse), which a tiny
model feels at once; the reward model's trunk already reads responses the way V must.

One rollout batch feeds ppo_epochs × minibatches loop steps. At its first step `before_step`
samples one response per prompt with the engine (π_old = its recorded log-probs), and computes
under no_grad π_ref's log-probs, V_old, the scores (minus rlhf.missing_eos_penalty for a response
that never ended), the per-token KL and rewards, GAE and whitened advantages. Each step is one
minibatch of that batch (seeded order per epoch): loss = L_π + vf_coef·L_V, token means. The
KL coefficient is updated once per rollout batch; it and the current batch live in
train_state.pt, so a killed run resumes exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import sys
from pathlib import Path
from typing import Any

import torch

from llmlab.align import ppo
from llmlab.align.common import (
    check_rollout_parallelism,
    check_same_vocab,
    freeze_unused_lm_head,
    frozen_copy,
    generation_config,
    load_policy,
    pad_token,
    rank_stream,
)
from llmlab.align.rollout import fill_stop_logprobs, load_prompts, prompt_batch, rl_batch, sample
from llmlab.config import Recipe, to_dict
from llmlab.io import write_toml
from llmlab.model.logprobs import token_logprobs

ROW_KEYS = ("ids", "mask", "old_logps", "advantages", "returns", "old_values", "finished")


class PolicyAndValue(torch.nn.Module):
    """The two trained networks as one module for the loop (one optimizer, two parameter groups).

    The loss calls it, not its parts: under DDP the loop hands loss_fn the wrapper, which has no
    .policy or .value, and only a forward through the wrapper all-reduces the gradients. Rollouts
    (before_step) get the unwrapped module and use the parts directly."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module):
        super().__init__()
        self.policy, self.value = policy, value
        self.cfg = policy.cfg

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π(ids[t+1] | ≤t), its entropy, V_t), each [B, T−1]."""
        lp, ent = token_logprobs(self.policy, ids, with_entropy=True)
        return lp, ent, self.value.values(ids)[:, :-1]


class RolloutState:
    """Extra state: the KL coefficient and the current rollout batch."""

    def __init__(self, kl: ppo.KLController):
        self.kl, self.batch, self.history = kl, {}, []

    def state_dict(self) -> dict:
        return {"kl": self.kl.state_dict(), "batch": self.batch, "history": self.history}

    def load_state_dict(self, d: dict) -> None:
        self.kl.load_state_dict(d["kl"])
        self.batch, self.history = d.get("batch", {}), d.get("history", [])


def value_model(reward_model: torch.nn.Module) -> torch.nn.Module:
    from llmlab.model.heads import ScalarHeadModel

    v = ScalarHeadModel(copy.deepcopy(reward_model.trunk), "value")
    v.score.weight.data.copy_(reward_model.score.weight.data)  # V starts as the reward model's reading
    return freeze_unused_lm_head(v)


@torch.no_grad()
def make_rollout(cfg, state, models, tok, prompts, device, seed: int, info=None) -> tuple[dict, list]:
    """One rollout batch of this rank (models unwrapped); the KL controller moves on the mean KL
    over every rank's responses, so all ranks keep the same coefficient."""
    from llmlab.train.distributed import DistInfo, all_reduce_sum

    policy, ref, reward, value = models
    samples = sample(
        policy,
        tok,
        prompts,
        1,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=seed,
    )
    b = rl_batch(samples, pad_token(tok))
    ids = b["ids"].to(device)
    fill_stop_logprobs(b, token_logprobs(policy, ids).cpu())
    ref_lp = token_logprobs(ref, ids).cpu()
    lengths = torch.tensor([len(s.prompt) + len(s.tokens) for s in samples], device=device)
    scores = reward(ids, lengths).float().cpu()
    scores = scores - cfg.missing_eos_penalty * (~b["finished"]).float()
    values = value.values(ids)[:, :-1].cpu() * b["mask"]  # V_t at the position that predicts y_{t+1}
    kl = ppo.kl_estimate(b["old_logps"], ref_lp, cfg.kl_estimator) * b["mask"]
    rewards = ppo.token_rewards(scores, kl, b["mask"], state.kl.value)
    if cfg.whiten_rewards:
        rewards = ppo.whiten(rewards, b["mask"], shift_mean=False)
    adv, returns = ppo.gae(rewards, values, b["mask"], cfg.gamma, cfg.lam)
    b.update(advantages=ppo.whiten(adv, b["mask"]), returns=returns, old_values=values)
    kl_seq = kl.sum(1)
    b["stats"] = torch.stack([kl_seq.mean(), scores.mean(), (scores - state.kl.value * kl_seq).mean(),
                              torch.tensor(state.kl.value)])  # fmt: skip
    kl_total, n = all_reduce_sum([float(kl_seq.sum()), float(len(samples))], info or DistInfo())
    state.kl.update(kl_total / n, int(n))
    return b, samples


def minibatch(b: dict, step_in_cycle: int, cfg, rollout_index: int) -> dict:
    """Minibatch j of epoch e of the rollout batch (a seeded permutation per epoch)."""
    e, j = divmod(step_in_cycle, cfg.minibatches)
    n = b["ids"].shape[0]
    order = list(range(n))
    random.Random(f"{cfg.seed}-{rollout_index}-{e}").shuffle(order)
    size = -(-n // cfg.minibatches)
    idx = torch.tensor(order[j * size : (j + 1) * size])
    return {k: (v[idx] if k in ROW_KEYS else v) for k, v in b.items()}


def rlhf(
    recipe: Recipe,
    policy_dir: str | os.PathLike,
    reward_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prompts: str | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """PPO-train the policy in `policy_dir` against the reward model in `reward_dir` → a model
    directory (and its value model in out_dir/value). Returns the loop's summary plus the
    per-rollout-batch history of (kl, score, rlhf_reward, kl_coef)."""
    from llmlab.model.load import load_with_head

    cfg = recipe.rlhf
    policy, tok = load_policy(policy_dir, "PPO's policy")
    reward, _ = load_with_head(reward_dir, "reward", "rlhf's reward model")
    check_same_vocab(policy, reward, f"the policy {policy_dir}", f"the reward model {reward_dir}")
    pool = load_prompts(tok, prompts or cfg.prompts, "train")
    resolved = to_dict(recipe)
    resolved["rlhf"]["reward_model"] = str(reward_dir)
    return rlhf_on_prompts(
        recipe, policy, tok, reward, pool, out_dir, generation=generation_config(policy_dir), resolved=resolved,
        resume=resume, verbose=verbose,
    )  # fmt: skip


def rlhf_on_prompts(
    recipe: Recipe,
    policy: torch.nn.Module,
    tok,
    reward: torch.nn.Module,
    pool: list,
    out_dir: str | os.PathLike,
    *,
    generation: dict | None = None,
    resolved: dict | None = None,
    observe=None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """`rlhf` on a list of `Prompt`s with loaded models; `observe(samples) -> float`, when given,
    is appended to each rollout batch's history entry (e.g. a true reward the proxy stands in for)."""
    from llmlab.model.load import save_model_dir
    from llmlab.train.distributed import setup
    from llmlab.train.loop import train

    cfg = recipe.rlhf
    info = setup(recipe.train.device)
    check_rollout_parallelism(recipe.train, info)
    device = info.device
    value = value_model(reward)
    ref = frozen_copy(policy)
    net = PolicyAndValue(policy, value).to(device)
    reward.to(device).eval().requires_grad_(False)
    cycle = cfg.ppo_epochs * cfg.minibatches
    steps = cfg.steps * cycle
    tcfg = dataclasses.replace(
        recipe.train, steps=steps, grad_accum=1, lr=cfg.lr, warmup=0, schedule="constant", weight_decay=0.0,
        optimizer="adamw", seed=cfg.seed, eval_every=0, sample_every=0, batch_size=cfg.batch_size,
    )  # fmt: skip
    state = RolloutState(ppo.KLController(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon))

    def before_step(step: int, m: torch.nn.Module) -> None:
        if step % cycle == 0 or not state.batch:
            index, seed = rank_stream(step // cycle, cfg.seed + step, info)  # this rank's own prompts
            batch_prompts = prompt_batch(pool, cfg.batch_size, index, cfg.seed)
            models = (m.policy, ref, reward, m.value)
            state.batch, samples = make_rollout(cfg, state, models, tok, batch_prompts, device, seed, info)
            extra = [float(observe(samples))] if observe is not None else []
            state.history.append([float(x) for x in state.batch["stats"]] + extra)

    def get_batch(step: int, micro: int) -> dict:
        return minibatch(state.batch, step % cycle, cfg, step // cycle)

    def loss_fn(m: torch.nn.Module, b: dict):  # m: the (possibly DDP-wrapped) PolicyAndValue
        lp, ent, v = m(b["ids"])
        mask = b["mask"]
        pg, n, pm = ppo.policy_loss(lp, b["old_logps"], b["advantages"], mask, cfg.cliprange)
        vf, _, vm = ppo.value_loss(v, b["old_values"], b["returns"], mask, cfg.cliprange_value)
        st = b["stats"]
        metrics = {
            **pm, **vm, "loss/policy": pg.detach() / n.clamp(min=1), "loss/value": vf.detach() / n.clamp(min=1),
            "objective/kl": st[0], "objective/scores": st[1], "objective/rlhf_reward": st[2], "kl_coef": st[3],
            "objective/entropy": ppo.masked_mean(ent, mask),
            "val/explained_variance": ppo.explained_variance(v.detach(), b["returns"], mask), "tokens": mask.sum(),
        }  # fmt: skip
        return pg + cfg.vf_coef * vf, n, metrics

    def groups(m: torch.nn.Module) -> list[dict]:
        return [
            {"params": [p for p in m.policy.parameters() if p.requires_grad], "weight_decay": 0.0},
            {
                "params": [p for p in m.value.parameters() if p.requires_grad],
                "weight_decay": 0.0,
                "lr_scale": cfg.value_lr_scale,
            },
        ]

    out = Path(out_dir)
    resolved = resolved or to_dict(recipe)
    gen = generation

    def on_checkpoint(st: dict, step: int) -> None:
        save_model_dir(
            out,
            policy,
            tok,
            generation=gen,
            state={k[7:]: v for k, v in st.items() if k.startswith("policy.")},
        )
        save_model_dir(
            out / "value", value, tok, state={k[6:]: v for k, v in st.items() if k.startswith("value.")}
        )
        write_toml(out / "recipe.toml", resolved)

    if verbose:
        print(
            f"rlhf: {len(pool)} prompts, {cfg.steps} rollout batches of {cfg.batch_size} × {cycle} PPO steps, "
            f"KL {cfg.kl_estimator} β={cfg.kl_coef}{' adaptive' if cfg.adaptive_kl else ''}",
            file=sys.stderr,
        )
    summary = train(
        net, tcfg, out, get_batch, loss_fn, on_checkpoint=on_checkpoint, before_step=before_step,
        param_groups=groups, extra_state=state, frozen=(ref, reward), dist_info=info, resume=resume, verbose=verbose,
    )  # fmt: skip
    summary.update(history=state.history, kl_coef=state.kl.value, out_dir=str(out))
    return summary
