"""The reward model: a scalar r(x, y) fitted to preferences with the Bradley–Terry model.

    P(y_c ≻ y_r | x) = σ(r(x, y_c) − r(x, y_r))
    L = −mean log σ(r_c − r_r − m)  +  c · mean((r_c + r_r)²)

with an optional per-pair margin m (how much better y_c is) and centring coefficient c (keeps the
rewards near 0, which they are otherwise free to drift from: L sees only differences). r is the
SFT trunk's final hidden state at the last real token (the completion's <|end|>) times one vector
w (`llmlab.model.heads.ScalarHeadModel`). These are TRL 1.16's `RewardTrainer.compute_loss`
definitions; the metrics are its accuracy (strict r_c > r_r), margin (mean r_c − r_r) and the
min / mean / max reward over the batch.

    from llmlab.align.reward import train_reward
    summary = train_reward(load_recipe(None), "runs/sft", "runs/reward")
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.align.common import (
    EpochBatches,
    freeze_unused_lm_head,
    load_policy,
    loop_settings,
    pad_token,
    steps_for,
)
from llmlab.align.data import PairSeq, load_preferences, pair_batch, split_pairs, tokenize_pairs
from llmlab.config import Recipe, to_dict
from llmlab.io import write_toml

EVAL_BATCH = 32


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, metrics) for [P] rewards of the chosen and rejected completions (module docstring)."""
    diff = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(diff - margin if margin is not None else diff).mean()
    if center_coef:
        loss = loss + center_coef * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    both = torch.cat([chosen_rewards, rejected_rewards]).detach()
    metrics = {
        "accuracy": (chosen_rewards > rejected_rewards).to(diff.dtype).mean().detach(),
        "margin": diff.mean().detach(),
        "mean_reward": both.mean(),
        "min_reward": both.min(),
        "max_reward": both.max(),
    }
    return loss, metrics


def pair_rewards(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    r = model(batch["ids"], batch["lengths"])
    n = r.shape[0] // 2
    return r[:n], r[n:]


@torch.no_grad()
def evaluate_reward(model, pairs: list[PairSeq], pad_id: int, device, cfg) -> dict[str, float]:
    """Held-out loss, accuracy and margin of the reward model over `pairs`."""
    rc, rr, margins = [], [], []
    for i in range(0, len(pairs), EVAL_BATCH):
        b = pair_batch(pairs[i : i + EVAL_BATCH], pad_id)
        c, r = pair_rewards(model, {k: v.to(device) for k, v in b.items()})
        rc.append(c.cpu())
        rr.append(r.cpu())
        margins.append(b["margin"])
    c, r = torch.cat(rc), torch.cat(rr)
    loss, m = bradley_terry_loss(c, r, torch.cat(margins) if cfg.margin else None, cfg.center_coef)
    return {"val_loss": float(loss), "val_accuracy": float(m["accuracy"]), "val_margin": float(m["margin"])}


def make_reward_model(policy: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The SFT trunk with a fresh scalar head (seeded)."""
    from llmlab.model.heads import ScalarHeadModel

    torch.manual_seed(seed)
    return freeze_unused_lm_head(ScalarHeadModel(policy, "reward"))


def train_reward(
    recipe: Recipe,
    policy_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data: str | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Fit a reward model (the SFT trunk + a scalar head) on recipe.reward.data (or `data`) → a
    model directory whose config.json says "head": "reward". Returns the loop's summary plus
    pairs, val_pairs, init_val_accuracy, val_accuracy, val_margin."""
    cfg = recipe.reward
    source = data or cfg.data
    policy, tok = load_policy(policy_dir, "the reward model's trunk")
    train_p, val_p = split_pairs(
        source, load_preferences(source, "train", cfg.seed, cfg.keep_ties), cfg.val_fraction, cfg.seed
    )
    pairs = tokenize_pairs(tok, train_p, policy.cfg.context, verbose)
    val_pairs = tokenize_pairs(tok, val_p, policy.cfg.context, verbose) if val_p else []
    resolved = to_dict(recipe)
    resolved["reward"]["data"] = source
    return reward_on_pairs(recipe, policy, tok, pairs, val_pairs, out_dir, resolved, resume, verbose)


def reward_on_pairs(
    recipe: Recipe,
    policy: torch.nn.Module,
    tok,
    pairs: list[PairSeq],
    val_pairs: list[PairSeq],
    out_dir: str | os.PathLike,
    resolved: dict | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """`train_reward` on token-level pairs, the reward model's trunk being `policy` (trained in place)."""
    from llmlab.model.load import save_model_dir
    from llmlab.train.distributed import setup
    from llmlab.train.loop import train

    cfg = recipe.reward
    model = make_reward_model(policy, cfg.seed)
    info = setup(recipe.train.device)
    device = info.device
    model.to(device)
    pad_id = pad_token(tok)
    steps = steps_for(cfg, len(pairs))
    tcfg = loop_settings(recipe.train, cfg, steps)
    order = EpochBatches(len(pairs), cfg.batch_size, cfg.seed)

    def get_batch(step: int, micro: int) -> dict:
        return pair_batch([pairs[i] for i in order.indices(step * info.world_size + info.rank)], pad_id)

    def loss_fn(m: torch.nn.Module, b: dict) -> tuple[torch.Tensor, int, dict]:
        c, r = pair_rewards(m, b)
        loss, metrics = bradley_terry_loss(c, r, b["margin"] if cfg.margin else None, cfg.center_coef)
        metrics.pop("min_reward"), metrics.pop("max_reward")  # not averageable over micro-batches
        return loss * c.shape[0], c.shape[0], {**metrics, "tokens": b["lengths"].sum()}

    def eval_fn(m):
        return evaluate_reward(m, val_pairs, pad_id, device, cfg)

    init = eval_fn(model.eval()) if val_pairs else {}
    out = Path(out_dir)
    resolved = resolved or to_dict(recipe)

    def on_checkpoint(state: dict, step: int) -> None:
        save_model_dir(out, model, tok, state=state)
        write_toml(out / "recipe.toml", resolved)

    if verbose:
        print(
            f"reward: {len(pairs)} pairs ({len(val_pairs)} held out); {steps} steps of {order.bs}",
            file=sys.stderr,
        )
    summary = train(
        model, tcfg, out, get_batch, loss_fn, eval_fn=eval_fn if val_pairs else None,
        on_checkpoint=on_checkpoint, dist_info=info, resume=resume, verbose=verbose,
    )  # fmt: skip
    summary.update(
        pairs=len(pairs),
        val_pairs=len(val_pairs),
        init_val_accuracy=init.get("val_accuracy", math.nan),
        out_dir=str(out),
    )
    return summary
