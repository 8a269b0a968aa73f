"""Checkpoints: the model directory plus `train_state.pt`, written atomically.

    out_dir/
      config.json, model.safetensors, tokenizer.json   the model directory contract (model/load.py)
      train_state.pt    {"format", "version", "step", "model", "optimizer", "rng", "extra"}
      metrics.jsonl     one JSON object per logged step / evaluation

`train_state.pt` carries its own copy of the weights, so it is self-consistent on its own: a process
killed between writing model.safetensors and train_state.pt resumes from the previous
train_state.pt, never from weights of one step and optimizer moments of another. Each file is
replaced atomically, so a crash (or a NaN stop) leaves the last good checkpoint intact.

State dicts are gathered with `torch.distributed.checkpoint.state_dict`, which gives the same
full, unsharded, FQN-keyed dicts for a plain module, DDP, a compiled module and FSDP2 (where the
gather is a collective every rank must join).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from llmlab.errors import UserError
from llmlab.io import atomic_open

FORMAT = "llmlab-train-state"
VERSION = 1
STATE_FILE = "train_state.pt"


def gather_state(
    model: torch.nn.Module, optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer]
) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts, keyed by parameter name (one dict for
    all of the run's optimizers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizers, options=opts)


def restore_state(
    model: torch.nn.Module,
    optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    model_state: dict,
    optim_state: dict,
) -> None:
    """Load full state dicts back into a (possibly wrapped or sharded) model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizers,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
        options=StateDictOptions(full_state_dict=True),
    )


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(
    out_dir: str | os.PathLike,
    *,
    step: int,
    model_state: dict,
    optim_state: dict,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write out_dir/train_state.pt atomically. `step` is the next step to run."""
    path = Path(out_dir) / STATE_FILE
    state = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "model": model_state,
        "optimizer": optim_state,
        "rng": rng_state(),
        "extra": extra or {},
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def load_train_state(out_dir: str | os.PathLike) -> dict:
    """Read out_dir/train_state.pt; a missing or corrupt file is a one-line `UserError`."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise UserError(f"{path}: no training state to resume from; run without --resume to start fresh")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated/garbled file
        raise UserError(
            f"{path}: corrupt training state ({type(e).__name__}); delete it to start fresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an llmlab training state; delete it to start fresh")
    return state
