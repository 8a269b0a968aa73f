"""`grpo(recipe, policy_dir, out_dir)`: GRPO with verifiable rewards on the one training loop.

Every `grpo.iterations` steps, `before_step` samples k completions for each of batch_size prompts
(the engine, one prefill per prompt), scores them with the reward functions, and turns the rewards
into group advantages; the next `iterations` steps update the policy on that batch with
`grpo_loss` (π_old = the engine's log-probs; the stop tokens', which the engine does not record,
come from the first update's own forward, which runs on the weights that sampled). A group's k
samples share one row that reads their prompt once where that is cheaper (`grpo_batch`). The batch
is kept in train_state.pt, so a killed run resumes exactly. With grpo.beta = 0 (the default) no
reference model is loaded.

    from llmlab.align.grpo_train import grpo
    summary = grpo(load_recipe(None), "runs/sft", "runs/grpo")
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from llmlab.align.common import (
    check_rollout_parallelism,
    frozen_copy,
    generation_config,
    load_policy,
    loop_settings,
    pad_token,
    rank_stream,
)
from llmlab.align.grpo import REWARD_FUNCS, group_advantages, grpo_loss
from llmlab.align.grpo_batch import batch_logprobs, rollout_batch
from llmlab.align.rollout import Prompt, fill_stop_logprobs, load_prompts, prompt_batch, sample
from llmlab.config import Recipe, to_dict
from llmlab.errors import UserError
from llmlab.generate.rows import eval_mode
from llmlab.io import write_toml


@torch.no_grad()
def exact_accuracy(model, tok, prompts: list[Prompt], max_new_tokens: int) -> float:
    """Greedy held-out accuracy: the share of prompts whose reply is exactly the answer."""
    from llmlab.generate import Engine, SamplingParams

    engine = Engine(model, tok, max_batch=min(64, len(prompts)))
    comps = engine.generate_ids(
        [p.ids for p in prompts], SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    )
    return sum(c.text.strip() == (p.answer or "").strip() for c, p in zip(comps, prompts)) / max(
        1, len(prompts)
    )


def score(samples, names: list[str]) -> torch.Tensor:
    """Σ of the named reward functions for each sample."""
    texts, answers, fin = (
        [s.text for s in samples],
        [s.answer or "" for s in samples],
        [s.finished for s in samples],
    )
    total = torch.zeros(len(samples))
    for n in names:
        total += torch.tensor(REWARD_FUNCS[n](texts, answers, fin))
    return total


class Rollouts:
    """The current batch of rollouts (the loop's extra state: saved and restored on resume)."""

    def __init__(self):
        self.batch: dict[str, Any] = {}

    def state_dict(self) -> dict:
        return {"batch": self.batch}

    def load_state_dict(self, d: dict) -> None:
        self.batch = d.get("batch", {})


def grpo(
    recipe: Recipe,
    policy_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prompts: str | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train the policy in `policy_dir` with GRPO on recipe.grpo.prompts → a model directory.
    Returns the loop's summary plus init_accuracy / accuracy (greedy, held-out, when the prompts
    carry answers) and the per-step mean reward (`rewards`)."""
    from llmlab.model.load import save_model_dir
    from llmlab.train.distributed import setup
    from llmlab.train.loop import train

    cfg = recipe.grpo
    if cfg.k < 2:
        raise UserError(f"grpo.k: {cfg.k} samples per prompt; GRPO needs k >= 2 to compare them")
    unknown = [n for n in cfg.rewards if n not in REWARD_FUNCS]
    if unknown or not cfg.rewards:
        raise UserError(f"grpo.rewards: {cfg.rewards}; choose from {', '.join(REWARD_FUNCS)}")
    source = prompts or cfg.prompts
    model, tok = load_policy(policy_dir, "GRPO's policy")
    info = setup(recipe.train.device)
    check_rollout_parallelism(recipe.train, info)
    model.to(info.device)
    ref = frozen_copy(model) if cfg.beta > 0 else None
    pool = load_prompts(tok, source, "train")
    held = load_prompts(tok, source, "test")[:64] if source.startswith("builtin:") else []
    pad_id = pad_token(tok)
    tcfg = loop_settings(
        recipe.train,
        cfg,
        cfg.steps,
        batch_size=cfg.batch_size * cfg.k,
        warmup=0,
        schedule="constant",
        weight_decay=0.0,
    )
    state = Rollouts()
    rewards_log: list[float] = []

    def before_step(step: int, policy: torch.nn.Module) -> None:
        if step % cfg.iterations and state.batch:
            return  # reuse this batch for μ = iterations updates
        # `policy` is the unwrapped module (the engine reads its attributes); each rank rolls out
        # its own prompts and samples, so W ranks train on W different batches
        index, seed = rank_stream(step // cfg.iterations, cfg.seed + step, info)
        batch_prompts = prompt_batch(pool, cfg.batch_size, index, cfg.seed)
        with eval_mode(policy):  # once per rollout, not once per engine step
            samples = sample(
                policy, tok, batch_prompts, cfg.k, max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, seed=seed,
            )  # fmt: skip
        r = score(samples, cfg.rewards)
        # old_logps: nan at stop tokens until the first update fills them
        b = rollout_batch(samples, cfg.k, pad_id, policy)
        if ref is not None:
            with torch.no_grad():
                b["ref_logps"] = batch_logprobs(ref, {k: v.to(info.device) for k, v in b.items()}).cpu()
        b["advantages"] = group_advantages(r, cfg.k, cfg.scale_rewards)
        std = r.view(-1, cfg.k).std(1)
        b["stats"] = torch.stack([r.mean(), std.mean(), (std == 0).float().mean()])
        state.batch = b
        rewards_log.append(float(r.mean()))

    def get_batch(step: int, micro: int) -> dict:
        return state.batch

    def loss_fn(policy: torch.nn.Module, b: dict):  # policy: the DDP wrapper, which all-reduces
        lp, ent = batch_logprobs(policy, b, with_entropy=True)
        if "logprob_gap" not in state.batch:
            # The batch's first update runs on the weights that sampled it, so this forward is π_old:
            # it fills the stop tokens' log-probs (which the engine does not record) without a
            # forward of its own; later updates and a resumed run read the filled batch.
            fill_stop_logprobs(state.batch, lp.detach().to(state.batch["old_logps"].device))
            b = {
                **b,
                "old_logps": state.batch["old_logps"].to(lp.device),
                "logprob_gap": state.batch["logprob_gap"],
            }
        s, n, m = grpo_loss(
            lp, b["old_logps"], b["advantages"], b["mask"], loss_type=cfg.loss_type, epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high or None, beta=cfg.beta, ref_logps=b.get("ref_logps"),
            max_completion_length=cfg.max_new_tokens, entropy=ent,
        )  # fmt: skip
        st = b["stats"]
        extra = {
            "reward": st[0],
            "reward_std": st[1],
            "frac_reward_zero_std": st[2],
            "logprob_gap": b["logprob_gap"],
        }
        return s, n, {**m, **extra, "tokens": b["mask"].sum()}

    init_acc = exact_accuracy(model, tok, held, cfg.max_new_tokens) if held else float("nan")
    out = Path(out_dir)
    resolved = to_dict(recipe)
    resolved["grpo"]["prompts"] = source
    gen = generation_config(policy_dir)

    def on_checkpoint(st: dict, step: int) -> None:
        save_model_dir(out, model, tok, generation=gen, state=st)
        write_toml(out / "recipe.toml", resolved)

    if verbose:
        print(
            f"grpo: {len(pool)} prompts, k={cfg.k}, {cfg.batch_size} prompts/step, {cfg.steps} steps, "
            f"loss {cfg.loss_type}, rewards {'+'.join(cfg.rewards)}",
            file=sys.stderr,
        )
    frozen = (ref,) if ref is not None else ()
    summary = train(
        model, tcfg, out, get_batch, loss_fn, on_checkpoint=on_checkpoint, before_step=before_step,
        extra_state=state, frozen=frozen, dist_info=info, resume=resume, verbose=verbose,
    )  # fmt: skip
    acc = exact_accuracy(model.eval(), tok, held, cfg.max_new_tokens) if held else float("nan")
    summary.update(
        init_accuracy=init_acc, accuracy=acc, rewards=rewards_log, held_out=len(held), out_dir=str(out)
    )
    return summary
