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
from llmlab.model.transformer import Transformer

FORMAT = "llmlab-model"
VERSION = 1


def save_weights(model: Transformer, path: str | os.PathLike) -> None:
    """Write weights as safetensors, atomically. Tied LM head weights are stored once."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    atomic_write_bytes(path, save(state, metadata={"format": "pt"}))


def load_weights(model: Transformer, path: str | os.PathLike) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: missing weights file") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: corrupt weights file ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def save_model_dir(
    out_dir: str | os.PathLike, model: Transformer, tokenizer=None, generation: dict | None = None
) -> Path:
    """Write config.json, model.safetensors, tokenizer.json (and generation.json) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"format": FORMAT, "version": VERSION, **model.cfg.to_dict()})
    save_weights(model, out / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer.json")
    if generation is not None:
        atomic_write_json(out / "generation.json", generation)
    return out


def read_config(path: str | os.PathLike) -> ModelConfig:
    data = read_json(Path(path) / "config.json", "model config")
    if data.get("format") != FORMAT:
        raise UserError(f"{path}/config.json: not an llmlab model config (format={data.get('format')!r})")
    data = {k: v for k, v in data.items() if k not in ("format", "version")}
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

    cfg = read_config(path)
    model = Transformer(cfg)
    load_weights(model, path / "model.safetensors")
    tok_file = path / "tokenizer.json"
    tok = Tokenizer.load(tok_file) if tok_file.is_file() else None
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        raise UserError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")
    return model.to(device).eval(), tok
