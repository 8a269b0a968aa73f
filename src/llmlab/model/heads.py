"""Scalar heads on the transformer trunk: the reward model and the value model.

    h = n(x_L) [B, T, d]   the trunk's final hidden states (Transformer(..., return_hidden=True))
    reward r(x, y) = w · h[b, last real token]     (one number per sequence)
    value  V_t     = w · h[b, t]                   (one number per position; PPO's critic)

w is one d-vector, no bias (as HF's `LlamaForSequenceClassification.score` with one label), so a
reward model exports weight for weight. A model directory says which head it carries in
config.json ("head": "lm" | "reward" | "value"; absent = "lm"), and `llmlab.load` returns a
`ScalarHeadModel` for the last two.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llmlab.model.transformer import Transformer

HEADS = ("lm", "reward", "value")


class ScalarHeadModel(nn.Module):
    """`ScalarHeadModel(trunk, kind)`: kind "reward" → forward(ids, lengths) [B];
    kind "value" → forward(ids) [B, T]. `trunk` is a `Transformer` (its LM head is unused)."""

    def __init__(self, trunk: Transformer, kind: str = "reward"):
        super().__init__()
        if kind not in ("reward", "value"):
            raise ValueError(f"kind must be reward or value, got {kind!r}")
        self.kind = kind
        self.cfg = trunk.cfg
        self.trunk = trunk
        self.score = nn.Linear(trunk.cfg.d_model, 1, bias=False)
        nn.init.normal_(self.score.weight, 0.0, 1.0 / (trunk.cfg.d_model + 1) ** 0.5)

    def values(self, ids: torch.Tensor) -> torch.Tensor:
        """w · h_t for every position: [B, T] float32."""
        h = self.trunk(ids, return_hidden=True)
        return self.score(h).float()[..., 0]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards [B] at position lengths−1 (default: the last) for kind "reward"; values [B, T]."""
        v = self.values(ids)
        if self.kind == "value":
            return v
        last = (lengths - 1) if lengths is not None else torch.full_like(ids[:, 0], ids.shape[1] - 1)
        return v.gather(1, last.long()[:, None].clamp(min=0))[:, 0]
