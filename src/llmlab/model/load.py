"""The model directory: what every stage reads and writes.

    runs/<name>/
      config.json          {"format": "llmlab-model", "version": 1, <ModelConfig fields>}
      model.safetensors    weights (the tied LM head is stored once, as tok_emb.weight)
      tokenizer.json       the llmlab tokenizer
      generation.json      optional: chat template, stop tokens, default sampling settings
      train_state.pt, metrics.jsonl, recipe.toml   for training runs (written by llmlab.train)

`load_model_dir` also accepts a local Hugging Face Llama / GPT-2 directory (config.json with a
`model_type`), converting it through `llmlab.model.hf`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from llmlab.errors import UserError
from llmlab.io import atomic_write_bytes, atomic_write_json, read_json
from llmlab.model.config import ModelConfig
from llmlab.model.heads import HEADS, ScalarHeadModel
from llmlab.model.transformer import Transformer

FORMAT = "llmlab-model"
VERSION = 1


def config_dict(cfg: ModelConfig, head: str = "lm") -> dict:
    """config.json: the ModelConfig fields, and "head" when the directory carries a reward/value head."""
    return {"format": FORMAT, "version": VERSION, **cfg.to_dict(), **({"head": head} if head != "lm" else {})}


def head_of(model: torch.nn.Module) -> str:
    """ "lm" for a Transformer, "reward"/"value" for a `ScalarHeadModel`."""
    return getattr(model, "kind", "lm")


def save_model_dir(
    out_dir: str | os.PathLike,
    model: Transformer,
    tokenizer=None,
    generation: dict | None = None,
    state: dict | None = None,
) -> Path:
    """Write a model directory: tokenizer.json, generation.json, config.json, then model.safetensors.

    `state` is the full state dict to save when it is not `model.state_dict()` (a gathered FSDP
    checkpoint). The tied LM head is stored once. Every file is replaced atomically, and the weights
    file carries its own config in its metadata, written last: a reader that opens the directory
    while a checkpoint is being written (a new config.json beside the old weights) still loads a
    consistent model, the one the weights belong to (`load_model_dir` trusts the embedded config).
    """
    from safetensors.torch import save

    out = Path(out_dir)
    cfg = config_dict(model.cfg, head_of(model))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in (state or model.state_dict()).items()}
    if model.cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
        tensors.pop("trunk.lm_head.weight", None)
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer.json")
    if generation is not None:
        atomic_write_json(out / "generation.json", generation)
    atomic_write_json(out / "config.json", cfg)
    metadata = {"format": "pt", "llmlab_config": json.dumps(cfg, sort_keys=True)}
    atomic_write_bytes(out / "model.safetensors", save(tensors, metadata=metadata))
    return out


def load_weights(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """(state dict, the config embedded in the file or None for files written before it was)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            embedded = (f.metadata() or {}).get("llmlab_config")
    except FileNotFoundError:
        raise UserError(f"{path}: missing weights file") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: corrupt weights file ({e})") from None
    return state, json.loads(embedded) if embedded else None


def read_config(path: str | os.PathLike, data: dict | None = None) -> ModelConfig:
    """The ModelConfig in `path`/config.json (or in `data`, the same dict from elsewhere)."""
    data = read_json(Path(path) / "config.json", "model config") if data is None else data
    if data.get("format") != FORMAT:
        raise UserError(f"{path}/config.json: not an llmlab model config (format={data.get('format')!r})")
    data = {k: v for k, v in data.items() if k not in ("format", "version", "head")}
    return ModelConfig.from_dict(data)


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model, tokenizer) from an llmlab model directory or a local HF Llama/GPT-2 directory.
    The model is returned in eval mode on `device`."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such model directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(
            f"{path}: not a model directory (no config.json); pass a directory written by "
            "`llmlab pretrain`/`llmlab sft` or a HF model directory"
        )
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file}:{e.lineno}: malformed JSON ({e.msg})") from None
    if "model_type" in raw:  # a Hugging Face directory
        from llmlab.model.hf import load_hf_dir

        model, tok = load_hf_dir(path)
        return model.to(device).eval(), tok
    from llmlab.tokenizer import Tokenizer

    state, embedded = load_weights(path / "model.safetensors")
    cfg_data = embedded if embedded is not None else read_json(path / "config.json", "model config")
    cfg = read_config(path, cfg_data)  # the weights' own config wins over a config.json mid-rewrite
    head = cfg_data.get("head", "lm")
    if head not in HEADS:
        raise UserError(f"{path}/config.json: unknown head {head!r}; valid: {', '.join(HEADS)}")
    model = Transformer(cfg) if head == "lm" else ScalarHeadModel(Transformer(cfg), head)
    if head != "lm" and cfg.tie_embeddings and "trunk.tok_emb.weight" in state:
        state = {**state, "trunk.lm_head.weight": state["trunk.tok_emb.weight"]}  # stored once
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_embeddings)]
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    tok_file = path / "tokenizer.json"
    tok = Tokenizer.load(tok_file) if tok_file.is_file() else None
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        raise UserError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")
    return model.to(device).eval(), tok


def load_with_head(path: str | os.PathLike, head: str, what: str, device: str | torch.device = "cpu"):
    """`load_model_dir`, requiring the head `what` needs: a one-line `UserError` naming the head the
    directory has (e.g. a policy passed where a reward model is expected)."""
    model, tok = load_model_dir(path, device)
    has = head_of(model)
    if has != head:
        made_by = {
            "lm": "`llmlab pretrain`/`llmlab sft`",
            "reward": "`llmlab reward`",
            "value": "`llmlab rlhf`",
        }
        raise UserError(
            f"{path}: has a {has!r} head but {what} needs a {head!r} head (a directory written by {made_by[head]})"
        )
    return model, tok
