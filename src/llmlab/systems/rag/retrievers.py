"""The retrievers: BM25 through `bm25s`, dense vectors in `faiss`, and reciprocal rank fusion.

BM25 (Robertson et al.; bm25s's default "lucene" variant), for a query q and chunk d:

    score(q, d) = Σ_{t ∈ q} IDF(t) · f(t, d) · (k₁ + 1) / (f(t, d) + k₁ · (1 − b + b · |d| / avgdl))
    IDF(t) = ln(1 + (N − n(t) + 0.5) / (n(t) + 0.5)),   k₁ = 1.5, b = 0.75

with f(t, d) the count of term t in d, n(t) the chunks containing t, N the chunks. Terms: bm25s's
tokenizer (lower case, English stop words removed). A chunk scoring 0 shares no term and is no hit.

Dense: cosine similarity of unit vectors = their inner product, searched exactly (`IndexFlatIP`),
or approximately with HNSW (`IndexHNSWFlat`, inner product) above `HNSW_ABOVE` vectors, where
efSearch = max(128, 8k) keeps recall@10 against the flat index ≥ 0.99 (measured in the tests).

Hybrid, reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): for the rankings r₁..r_m,

    RRF(d) = Σ_i 1 / (60 + rank_i(d))        (a chunk missing from ranking i adds nothing)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RRF_K = 60
HNSW_ABOVE = 100_000  # vectors; below this the exact flat index is fast enough
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 200


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_id: str
    text: str
    score: float
    title: str = ""


def _require(module: str, what: str):
    import importlib

    from llmlab.errors import UserError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the [rag] extra: pip install 'llmlab[rag]' ({module})") from None


class BM25:
    """A bm25s index over chunk texts; `search` returns (row, score) with score > 0."""

    def __init__(self, retriever, n: int):
        self.retriever, self.n = retriever, n

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25:
        bm25s = _require("bm25s", "BM25 retrieval")
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)
        return cls(retriever, len(texts))

    def save(self, path: str | os.PathLike) -> None:
        self.retriever.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, n: int) -> BM25:
        bm25s = _require("bm25s", "BM25 retrieval")
        return cls(bm25s.BM25.load(str(path)), n)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        bm25s = _require("bm25s", "BM25 retrieval")
        terms = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not terms[0] or self.n == 0:
            return []
        rows, scores = self.retriever.retrieve(terms, k=min(k, self.n), show_progress=False)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]


def hnsw_ef_search(k: int) -> int:
    return max(128, 8 * k)


class Dense:
    """Unit vectors in a faiss index: flat inner product, or HNSW above `hnsw_above` vectors."""

    def __init__(self, index, kind: str):
        self.index, self.kind = index, kind

    @classmethod
    def build(cls, vectors: np.ndarray, hnsw_above: int = HNSW_ABOVE) -> Dense:
        faiss = _require("faiss", "dense retrieval")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        d = vectors.shape[1]
        if len(vectors) > hnsw_above:
            index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            kind = "hnsw"
        else:
            index, kind = faiss.IndexFlatIP(d), "flat"
        index.add(vectors)
        return cls(index, kind)

    def save(self, path: str | os.PathLike) -> None:
        _require("faiss", "dense retrieval").write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dense:
        faiss = _require("faiss", "dense retrieval")
        index = faiss.read_index(str(Path(path)))
        return cls(index, "hnsw" if hasattr(index, "hnsw") else "flat")

    def search(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self.index.ntotal == 0:
            return []
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = hnsw_ef_search(k)
        scores, rows = self.index.search(
            np.asarray(query_vector, np.float32).reshape(1, -1), min(k, self.index.ntotal)
        )
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]


def rrf(rankings: Sequence[Sequence[int]], k0: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings (rows, best first): [(row, Σ 1/(k0 + rank))], best first;
    ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k0 + rank)
    return sorted(scores.items(), key=lambda rs: -rs[1])
