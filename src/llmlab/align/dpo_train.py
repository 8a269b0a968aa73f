"""`dpo(recipe, policy_dir, out_dir)`: train a policy with the DPO family on preference pairs.

The reference π_ref is the starting policy, frozen. Its summed completion log-probs do not change
during training, so they are computed once for every pair before the first step (one forward of
the reference per pair, instead of one per pair per epoch) and travel in the batches. Each step
then computes the policy's summed log-probs of the P chosen and P rejected completions in one
forward of P rows that read each prompt once (`llmlab.align.shared_prompt`) and
`llmlab.align.dpo.dpo_loss`; the loop averages over pairs (loss_fn returns P · mean, P).

    from llmlab.align.dpo_train import dpo
    summary = dpo(load_recipe(None), "runs/sft", "runs/dpo")
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from llmlab.align.common import (
    EpochBatches,
    frozen_copy,
    generation_config,
    load_policy,
    loop_settings,
    pad_token,
    steps_for,
)
from llmlab.align.data import PairSeq, load_preferences, split_pairs, tokenize_pairs
from llmlab.align.dpo import check_dpo_args, dpo_loss
from llmlab.align.shared_prompt import shared_prompt_batch, shared_prompt_logps
from llmlab.config import Recipe, to_dict
from llmlab.io import write_toml

EVAL_BATCH = 32


def loss_types(cfg) -> tuple[list[str], list[float]]:
    """The recipe's loss type, plus the SFT term when dpo.sft_weight > 0."""
    types, weights = [cfg.loss_type], [1.0]
    if cfg.sft_weight > 0 and cfg.loss_type != "sft":
        types.append("sft")
        weights.append(cfg.sft_weight)
    return types, weights


@torch.no_grad()
def pair_logps(model: torch.nn.Module, pairs: list[PairSeq], pad_id: int, device) -> torch.Tensor:
    """[N, 2] summed completion log-probs (chosen, rejected) of every pair under `model`."""
    out = []
    for i in range(0, len(pairs), EVAL_BATCH):
        b = {k: v.to(device) for k, v in shared_prompt_batch(pairs[i : i + EVAL_BATCH], pad_id).items()}
        out.append(shared_prompt_logps(model, b).cpu().view(2, -1).T)
    return torch.cat(out).double()


def make_batch(pairs: list[PairSeq], ref: torch.Tensor, idx: list[int], pad_id: int) -> dict:
    b = shared_prompt_batch([pairs[i] for i in idx], pad_id)
    b["ref_logps"] = ref[idx].float()
    return b


def dpo_step_loss(cfg) -> Any:
    types, weights = loss_types(cfg)

    def loss_fn(model: torch.nn.Module, b: dict) -> tuple[torch.Tensor, int, dict]:
        lp = shared_prompt_logps(model, b)
        n = lp.shape[0] // 2
        lengths = b["lengths"]
        loss, metrics = dpo_loss(
            lp[:n], lp[n:], b["ref_logps"][:, 0], b["ref_logps"][:, 1], beta=cfg.beta, loss_type=types,
            loss_weights=weights, label_smoothing=cfg.label_smoothing,
            chosen_lengths=lengths[:n], rejected_lengths=lengths[n:],
        )  # fmt: skip
        return loss * n, n, {**metrics, "tokens": lengths.sum()}

    return loss_fn


def evaluate_pairs(model, pairs: list[PairSeq], ref: torch.Tensor, cfg, pad_id: int, device) -> dict:
    """Held-out DPO loss, implicit-reward accuracy and margin (β · log π/π_ref)."""
    lp = pair_logps(model, pairs, pad_id, device)
    lengths = torch.tensor([[len(p.chosen), len(p.rejected)] for p in pairs], dtype=torch.float64)
    types, weights = loss_types(cfg)
    loss, m = dpo_loss(
        lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta, loss_type=types, loss_weights=weights,
        label_smoothing=cfg.label_smoothing, chosen_lengths=lengths[:, 0], rejected_lengths=lengths[:, 1],
    )  # fmt: skip
    return {
        "val_loss": float(loss),
        "val_accuracy": float(m["rewards/accuracies"]),
        "val_margin": float(m["rewards/margins"]),
    }


def dpo(
    recipe: Recipe,
    policy_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data: str | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """DPO-train the model in `policy_dir` on recipe.dpo.data (or `data`) → a model directory.

    Returns the loop's summary plus pairs, val_pairs, init_val_loss (ln 2 for the sigmoid loss),
    init_val_accuracy, val_accuracy, val_margin."""
    cfg = recipe.dpo
    check_dpo_args(cfg.beta, loss_types(cfg)[0], cfg.label_smoothing)
    source = data or cfg.data
    model, tok = load_policy(policy_dir, "DPO's policy")
    prefs = load_preferences(source, "train", cfg.seed, cfg.keep_ties)
    train_p, val_p = split_pairs(source, prefs, cfg.val_fraction, cfg.seed)
    ctx = model.cfg.context
    pairs = tokenize_pairs(tok, train_p, ctx, verbose)
    val_pairs = tokenize_pairs(tok, val_p, ctx, verbose) if val_p else []
    resolved = to_dict(recipe)
    resolved["dpo"]["data"] = source
    return dpo_on_pairs(
        recipe, model, tok, pairs, val_pairs, out_dir, generation=generation_config(policy_dir),
        resolved=resolved, resume=resume, verbose=verbose,
    )  # fmt: skip


def dpo_on_pairs(
    recipe: Recipe,
    model: torch.nn.Module,
    tok,
    pairs: list[PairSeq],
    val_pairs: list[PairSeq],
    out_dir: str | os.PathLike,
    *,
    generation: dict | None = None,
    resolved: dict | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """`dpo` on token-level pairs (any prompt format: chat or plain text) with `model` as the
    starting policy and (a frozen copy) the reference."""
    from llmlab.model.load import save_model_dir
    from llmlab.train.distributed import setup
    from llmlab.train.loop import train

    cfg = recipe.dpo
    types, _ = loss_types(cfg)
    check_dpo_args(cfg.beta, types, cfg.label_smoothing)
    info = setup(recipe.train.device)
    device = info.device
    model.to(device)
    ref_model = frozen_copy(model)
    pad_id = pad_token(tok)
    ref = pair_logps(ref_model, pairs, pad_id, device)  # once: π_ref never changes
    val_ref = pair_logps(ref_model, val_pairs, pad_id, device) if val_pairs else None
    del ref_model
    steps = steps_for(cfg, len(pairs))
    tcfg = loop_settings(recipe.train, cfg, steps)
    order = EpochBatches(len(pairs), cfg.batch_size, cfg.seed)

    def get_batch(step: int, micro: int) -> dict:
        return make_batch(pairs, ref, order.indices(step * info.world_size + info.rank), pad_id)

    def eval_fn(m):
        return evaluate_pairs(m, val_pairs, val_ref, cfg, pad_id, device)

    init = eval_fn(model.eval()) if val_pairs else {}
    out = Path(out_dir)
    resolved = resolved or to_dict(recipe)

    def on_checkpoint(state: dict, step: int) -> None:
        save_model_dir(out, model, tok, generation=generation, state=state)
        write_toml(out / "recipe.toml", resolved)

    if verbose:
        print(
            f"dpo: {len(pairs)} pairs ({len(val_pairs)} held out), loss {'+'.join(types)}, β={cfg.beta}; "
            f"{steps} steps of {order.bs} pairs; reference log-probs precomputed",
            file=sys.stderr,
        )
    torch.manual_seed(cfg.seed)
    summary = train(
        model, tcfg, out, get_batch, dpo_step_loss(cfg), eval_fn=eval_fn if val_pairs else None,
        on_checkpoint=on_checkpoint, dist_info=info, resume=resume, verbose=verbose,
    )  # fmt: skip
    summary.update(
        pairs=len(pairs),
        val_pairs=len(val_pairs),
        init_val_loss=init.get("val_loss", math.nan),
        init_val_accuracy=init.get("val_accuracy", math.nan),
        out_dir=str(out),
    )
    return summary
