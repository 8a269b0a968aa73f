"""Perplexity and bits per byte against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.eval import perplexity
from llmlab.eval.perplexity import token_stream
from llmlab.model import ModelConfig, Transformer
from llmlab.tokenizer import Tokenizer

TEXTS = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer ünïcode."]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(" ".join(TEXTS) * 5, 300)


class Uniform(torch.nn.Module):
    def __init__(self, vocab: int, context: int):
        super().__init__()
        self.cfg = ModelConfig(
            vocab_size=vocab, n_layer=1, d_model=8, n_head=2, n_kv_head=2, d_ff=8, context=context
        )
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, **kw):
        return torch.zeros(*ids.shape, self.cfg.vocab_size) + self.w


def test_uniform_model_has_perplexity_vocab_size(tok):
    r = perplexity(Uniform(tok.vocab_size, 16), tok, TEXTS)
    ids = token_stream(tok, TEXTS)
    assert r["tokens"] == len(ids) - 1  # every token but the first is predicted once
    assert r["loss"] == pytest.approx(math.log(tok.vocab_size)) and r["ppl"] == pytest.approx(tok.vocab_size)
    n_bytes = sum(
        len(t.encode()) for t in TEXTS
    )  # <|bos|> counts 0 bytes; the first <|bos|> is not predicted
    assert r["bytes"] == n_bytes
    assert r["bpb"] == pytest.approx(r["tokens"] * math.log(tok.vocab_size) / (math.log(2) * n_bytes))


def test_matches_a_direct_computation(tok):
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=256
        )
    ).eval()
    ids = token_stream(tok, TEXTS)
    assert len(ids) <= 257  # one window
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    expected = float(F.cross_entropy(logits, torch.tensor(ids[1:])))
    r = perplexity(model, tok, TEXTS, batch_size=1)
    assert r["loss"] == pytest.approx(expected, rel=1e-5)
    # windows: a short context splits the stream, and the sum over windows still covers every token once
    r2 = perplexity(model, tok, TEXTS, context=7)
    assert r2["tokens"] == r["tokens"] and r2["bytes"] == r["bytes"]
