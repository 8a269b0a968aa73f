"""Supervised fine-tuning (SFT): continue training a base model on (instruction, ideal response) pairs.

The objective is pretraining's next-token cross-entropy, counted only on what the assistant says.
With the chat template's loss mask m_t (1 on assistant content, its tool calls and its `<|end|>`),

    L_SFT = − Σ_t m_t · log p_θ(x_t | x_<t) / Σ_t m_t

so the model learns to answer (and to stop), never to imitate the user. Everything else is the one
training loop (`llmlab.train.loop.train`): SFT supplies chat batches (`ChatBatches`, padded or packed
with document-masked attention) and this loss, with a lower learning rate and a few epochs.

    from llmlab.config import load_recipe
    from llmlab.train.sft import sft
    summary = sft(load_recipe("recipes/shakespeare-cpu.toml"), "runs/base", "runs/sft")

The output is a model directory whose generation.json names the chat template and its stop tokens,
so `llmlab chat` / `llmlab generate` use the template automatically.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import torch

from llmlab.config import Recipe, to_dict
from llmlab.data.chat import Conversation, load_conversations, tokenize_conversations
from llmlab.data.chat_batches import ChatBatches, pad_batch
from llmlab.errors import UserError
from llmlab.io import atomic_write_json, write_toml
from llmlab.tokenizer.chat import STOP_TOKENS, TEMPLATE_NAME
from llmlab.train.losses import lm_loss_sum

GENERATION_CONFIG = {
    "chat_template": TEMPLATE_NAME,
    "stop_tokens": list(STOP_TOKENS),
    "temperature": 0.0,
    "max_new_tokens": 256,
}


def sft_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int, dict]:
    """(Σ −log p over the batch's trained targets, their number, metrics); targets == IGNORE_INDEX
    are skipped. The loop divides by the count over all micro-batches and ranks, which is L_SFT of
    the whole global batch (a mean of per-micro-batch means would not be). Packed rows pass
    per-conversation positions and a block-diagonal mask to the model.

    Only the trained positions go through the LM head (`losses.lm_loss_sum`): in midtraining two
    thirds of the positions are prompt, whose logits the loss never reads."""
    loss, kept = lm_loss_sum(
        model, batch["ids"], batch["targets"], positions=batch["positions"], attn_mask=batch["attn_mask"]
    )
    return loss, kept.numel(), {"tokens": kept.numel()}


def assistant_loss(
    model: torch.nn.Module,
    seqs: list[tuple[list[int], list[int]]],
    token_bytes: torch.Tensor,
    batch_size: int = 32,
) -> dict[str, float]:
    """{"val_loss", "val_bpb"} on the assistant tokens of `seqs` (padded batches): L_SFT and its bpb."""
    from llmlab.eval.perplexity import loss_and_bpb, nll_sums

    seqs = sorted(seqs, key=lambda s: len(s[0]))  # a sum over conversations: batch by length, pad less
    batches = (
        (b["ids"], b["targets"])
        for b in (pad_batch(seqs[i : i + batch_size]) for i in range(0, len(seqs), batch_size))
    )
    return loss_and_bpb(*nll_sums(model, batches, token_bytes))


def split_conversations(
    source: str, convs: list[Conversation], val_fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, val): built-in data validates on its held-out test split; a file holds out a
    seeded random `val_fraction` of its conversations (none when that is under one)."""
    if source.startswith("builtin:") and source != "builtin:midtrain":  # generated: no test split
        return convs, load_conversations(source, seed, split="test")
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_val = int(len(convs) * val_fraction)
    val = {order[i] for i in range(n_val)}
    return [c for i, c in enumerate(convs) if i not in val], [c for i, c in enumerate(convs) if i in val]


def sft(
    recipe: Recipe,
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data: str | None = None,
    resume: bool = False,
    verbose: bool = True,
    section: str = "sft",
) -> dict[str, Any]:
    """Fine-tune the model in `base_dir` on recipe.sft.data (or `data`) → a model directory in `out_dir`.
    `section` names the recipe section that holds the settings ("midtrain" for midtraining).

    Returns the training loop's summary plus: conversations, val_conversations, trained_tokens_per_epoch,
    epochs, base_val_loss (the base model's assistant-token loss on the val conversations, before SFT).
    """
    from llmlab.eval.perplexity import byte_lengths
    from llmlab.model.load import load_model_dir, save_model_dir
    from llmlab.train.loop import train

    cfg = getattr(recipe, section)
    source = data or cfg.data
    model, tok = load_model_dir(base_dir)
    if tok is None:
        raise UserError(f"{base_dir}: no tokenizer.json; SFT needs the base model's tokenizer")
    ctx = model.cfg.context
    row_len = cfg.row_len or ctx
    if row_len > ctx:
        raise UserError(f"sft.row_len ({row_len}) exceeds the model's context ({ctx})")

    convs = load_conversations(source, seed=cfg.seed, midtrain=recipe.midtrain)
    train_convs, val_convs = split_conversations(source, convs, cfg.val_fraction, cfg.seed)
    # A conversation of L tokens gives L - 1 predictions, which must fit in a row / the context.
    seqs = tokenize_conversations(tok, train_convs, max_len=row_len + 1, truncate=cfg.truncate)
    val_seqs = tokenize_conversations(tok, val_convs, max_len=ctx + 1, truncate="drop") if val_convs else []
    pad_id = tok.special_tokens.get("<|end|>", 0)
    if cfg.micro_batches > cfg.batch_size:
        raise UserError(
            f"{section}.micro_batches ({cfg.micro_batches}) exceeds {section}.batch_size ({cfg.batch_size}); "
            "set it to at most the batch size (each micro-batch holds at least one row)"
        )
    batches = ChatBatches(seqs, cfg.batch_size, row_len, cfg.pack, cfg.seed, pad_id, cfg.micro_batches)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * batches.steps_per_epoch))
    tcfg = dataclasses.replace(
        recipe.train,
        steps=steps,
        batch_size=cfg.batch_size,
        grad_accum=cfg.micro_batches,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        warmup=min(cfg.warmup, steps // 2),
        schedule=cfg.schedule,
        weight_decay=cfg.weight_decay,
        optimizer=cfg.optimizer,
        muon_lr=cfg.muon_lr,
        seed=cfg.seed,
        eval_every=cfg.eval_every or steps,
        save_every=recipe.train.save_every,
        sample_every=0,
    )

    from llmlab.train.distributed import setup

    info = setup(tcfg.device)

    def get_batch(step: int, micro: int) -> dict:
        # Each rank takes its own rows; rank r of W at step s reads global batch index s·W + r.
        return batches.get(step * info.world_size + info.rank, micro)

    token_bytes = byte_lengths(tok, model.cfg.vocab_size)
    eval_fn = (lambda m: assistant_loss(m, val_seqs, token_bytes)) if val_seqs else None
    base_val = assistant_loss(model.to(info.device), val_seqs, token_bytes) if val_seqs else {}

    out = Path(out_dir)
    resolved = to_dict(recipe)
    resolved[section]["data"] = source

    def on_checkpoint(model_state: dict, step: int) -> None:
        save_model_dir(out, model, tok, generation=GENERATION_CONFIG, state=model_state)
        write_toml(out / "recipe.toml", resolved)
        atomic_write_json(out / "sft.json", {"base_model": str(base_dir), "data": source, "step": step})

    if verbose:
        print(
            f"{section}: {len(seqs)} conversations ({batches.n_target_tokens():,} trained tokens/epoch), "
            f"{len(val_seqs)} held out; {steps} steps of {cfg.batch_size} "
            f"{'packed rows' if cfg.pack else 'conversations'} (~{steps / batches.steps_per_epoch:.1f} epochs)",
            file=sys.stderr,
        )
    watch = None
    if section == "midtrain" and cfg.max_steps > steps and cfg.tool_use > 0:
        from llmlab.train.call_watch import CallWatch

        watch = CallWatch(tok, steps, cfg.max_steps, cfg.call_goal, tcfg.warmup, verbose=verbose)
    torch.manual_seed(cfg.seed)
    # The loop counts trained (assistant) tokens; each one costs the forward/backward of all the
    # prompt positions around it, so FLOPs per trained token = per-position FLOPs × positions/trained.
    positions_per_trained = sum(len(ids) - 1 for ids, _ in seqs) / max(1, batches.n_target_tokens())
    flops_per_token = model.cfg.flops_per_token(row_len) * positions_per_trained
    summary = train(
        model,
        tcfg,
        out,
        get_batch,
        sft_loss,
        eval_fn=eval_fn,
        on_checkpoint=on_checkpoint,
        before_step=watch.before_step if watch else None,
        extra_state=watch,
        dist_info=info,
        flops_per_token=flops_per_token,
        resume=resume,
        verbose=verbose,
    )
    summary.update(
        conversations=len(seqs),
        val_conversations=len(val_seqs),
        trained_tokens_per_epoch=batches.n_target_tokens(),
        epochs=summary["steps"] / batches.steps_per_epoch,
        base_val_loss=base_val.get("val_loss", math.nan),
        out_dir=str(out),
    )
    if watch is not None:
        summary["call_watch"] = watch.record()
    return summary
