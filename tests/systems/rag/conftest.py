"""Fixtures: a small folder of documents and a fast deterministic stand-in for the sentence encoder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from llmlab.systems.rag.embed import WordSpans

pytest.importorskip("bm25s", reason="the [rag] extra (bm25s) is not installed")


class HashEmbedder:
    """Bag of hashed lower-case words, L2-normalised: texts sharing words have high cosine.
    Counts the texts it encodes, so a test can see what an update re-embedded."""

    id, dim = "test-hash", 64

    def __init__(self, dim: int = 64, id: str = "test-hash"):
        self.dim, self.id, self.encoded = dim, id, 0

    def spans(self, text):
        return WordSpans().spans(text)

    def encode(self, texts):
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.strip(".,?!").encode()).hexdigest(), 16) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


DOCS = {
    "kelmar.md": "# Kelmar\n\nKelmar is a town on the river Osk. It was founded by Ilsa Dorne in 1742.",
    "brisk.txt": "Brisk is a harbour town. Its people are known for bells and copper work.",
    "sub/loom.html": "<html><head><title>The copper loom</title><script>var x = 1;</script></head>"
    "<body><p>The copper loom was invented by Tavo Renhald.</p><p>It weaves wool.</p></body></html>",
    "extra.jsonl": '{"id": "doc-9", "title": "Osk", "text": "The Osk is a cold river that runs past Kelmar."}\n',
}


@pytest.fixture
def docs_dir(tmp_path):
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def embedder():
    return HashEmbedder()


@pytest.fixture
def make_embedder():
    """The factory: make_embedder(dim=64, id="test-hash")."""
    return HashEmbedder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 1-layer llmlab model directory with a small BPE tokenizer and a chat template."""
    from llmlab.data import grounded
    from llmlab.model import ModelConfig, Transformer
    from llmlab.model.load import save_model_dir
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train([d["text"] for d in grounded.documents("train")], vocab_size=400)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64, context=256
    )
    return save_model_dir(tmp_path_factory.mktemp("model"), Transformer(cfg).eval(), tok)
