"""HF export of a reward model: a `LlamaForSequenceClassification` directory (num_labels = 1).

The trunk maps weight for weight as for `LlamaForCausalLM` (model/hf.py); our scalar head w is
HF's `score.weight` [1, d] (no bias). HF scores the last token that is not the pad token, so the
config's pad_token_id is <|bos|>, which never ends a sequence; batches padded with it (on the
right) score the same token as our `lengths − 1`.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmlab.io import atomic_write_json, read_json
from llmlab.model.heads import ScalarHeadModel
from llmlab.model.hf import export_hf


def export_reward_hf(
    model: ScalarHeadModel, tok, out_dir: str | os.PathLike, generation: dict | None = None
) -> Path:
    """Write `model` as a HF `LlamaForSequenceClassification` directory in `out_dir`."""
    from safetensors.torch import load_file, save_file

    out = export_hf(model.trunk, tok, out_dir, generation)
    cfg = read_json(out / "config.json", "HF config")
    bos = cfg.get("bos_token_id")
    cfg.update(
        architectures=["LlamaForSequenceClassification"],
        num_labels=1,
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
        pad_token_id=bos,
        tie_word_embeddings=False,  # no LM head in a classifier
    )
    atomic_write_json(out / "config.json", cfg)
    weights = load_file(str(out / "model.safetensors"))
    weights.pop("lm_head.weight", None)
    weights["score.weight"] = model.score.weight.detach().float().contiguous().cpu()
    tmp = out / ".model.safetensors.tmp"
    save_file(weights, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    return out
