"""Fixtures: a tiny random model and a byte-level stub tokenizer (the real one has the same API)."""

from __future__ import annotations

import pytest
import torch

from llmlab.model import ModelConfig, Transformer

torch.set_num_threads(1)  # tiny shapes: threads only add overhead on a shared machine

SPECIALS = ["<|bos|>", "<|user|>", "<|assistant|>", "<|end|>"]


class ByteTokenizer:
    """ids 0..255 are bytes, then the special tokens: the smallest tokenizer with the contract's API."""

    def __init__(self):
        self.special_tokens = {s: 256 + i for i, s in enumerate(SPECIALS)}
        self.vocab_size = 256 + len(SPECIALS)

    def encode(self, text: str, allowed_special=()) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for s, sid in self.special_tokens.items():
                if allowed_special == "all" and text.startswith(s, i):
                    ids.append(sid)
                    i += len(s)
                    break
            else:
                ids.extend(text[i].encode("utf-8"))
                i += 1
        return ids

    def decode_bytes(self, ids) -> bytes:
        inv = {v: k for k, v in self.special_tokens.items()}
        return b"".join(inv[i].encode() if i in inv else bytes([i]) for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def tiny_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=260, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=64, init_std=0.3
    )
    cfg.update(kw)
    return Transformer(ModelConfig(**cfg)).eval()


@pytest.fixture
def tok():
    return ByteTokenizer()


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def make_model():
    """The factory: make_model(seed, **config overrides)."""
    return tiny_model
