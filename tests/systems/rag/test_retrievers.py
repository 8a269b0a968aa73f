"""Reciprocal rank fusion by its formula; HNSW keeps recall@10 ≥ 0.99 against the exact flat index."""

from __future__ import annotations

import numpy as np
import pytest

from llmlab.systems.rag.retrievers import BM25, Dense, rrf


def test_rrf_is_the_sum_of_reciprocal_ranks():
    fused = dict(rrf([[1, 2, 3], [3, 1]]))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert [row for row, _ in rrf([[1, 2, 3], [3, 1]])] == [1, 3, 2]


def test_bm25_scores_only_chunks_sharing_a_term():
    bm = BM25.build(["the copper loom", "a river town", "copper bells and copper pots"])
    hits = bm.search("copper", k=3)
    assert {r for r, _ in hits} == {0, 2} and all(s > 0 for _, s in hits)
    assert bm.search("zzz", k=3) == []


def test_hnsw_recall_at_10_against_flat():
    pytest.importorskip("faiss", reason="faiss-cpu not installed")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 32))
    x = centers[rng.integers(0, 50, 4000)] + 0.3 * rng.normal(size=(4000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    flat, hnsw = Dense.build(x, hnsw_above=10**9), Dense.build(x, hnsw_above=1000)
    assert (flat.kind, hnsw.kind) == ("flat", "hnsw")
    queries = x[rng.choice(4000, 200, replace=False)] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    found = [
        len({r for r, _ in hnsw.search(q, 10)} & {r for r, _ in flat.search(q, 10)}) / 10 for q in queries
    ]
    assert np.mean(found) >= 0.99
