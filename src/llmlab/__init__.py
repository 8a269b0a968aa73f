"""llmlab: the whole life of a large language model in one hackable toolkit.

import llmlab
model, tok = llmlab.load("runs/speedrun/sft")   # a model directory, or a local HF Llama/GPT-2 dir
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Return `(model, tokenizer)` from an llmlab model directory or a local HF Llama/GPT-2 directory."""
    from llmlab.model.load import load_model_dir

    return load_model_dir(path, device=device)
