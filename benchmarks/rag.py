"""Retrieval on 20,000 generated documents: our BM25 wrapper vs the libraries it stands on, and
dense search flat vs HNSW with the recall HNSW keeps.

    bm25 (llmlab)    `llmlab.systems.rag.retrievers.BM25`: build, then one query at a time
    bm25s direct     the same `bm25s` calls without the wrapper (the overhead must stay ≤ 10%)
    rank-bm25        `rank_bm25.BM25Okapi`, the common pure-Python choice (skipped if not installed)
    dense flat       faiss IndexFlatIP on unit vectors (exact)
    dense hnsw       faiss IndexHNSWFlat, M = 32, efSearch = max(128, 8k); recall@10 against flat

Documents are invented-entity sentences (llmlab.data.grounded's vocabulary, random combinations);
the vectors are random unit vectors around 200 cluster centres (the search cost does not depend on
where vectors come from, and MiniLM would dominate the time). Prints one line per measurement.

    python benchmarks/rag.py [--docs 20000] [--queries 500]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np


def documents(n: int, seed: int = 0) -> list[str]:
    from llmlab.data import grounded

    rng = random.Random(seed)
    words = sorted({w.strip(".") for d in grounded.documents("train") for w in d["text"].split()})
    return [" ".join(rng.choices(words, k=rng.randint(20, 60))) for _ in range(n)]


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t0) / repeat, out


def bench_bm25(docs: list[str], queries: list[str], k: int) -> None:
    import bm25s

    from llmlab.systems.rag.retrievers import BM25

    t_ours, ours = timed(lambda: BM25.build(docs))
    q_ours, _ = timed(lambda: [ours.search(q, k) for q in queries])

    def direct_build():
        r = bm25s.BM25()
        r.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
        return r

    t_direct, direct = timed(direct_build)

    def direct_query():
        for q in queries:
            terms = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)
            direct.retrieve(terms, k=k, show_progress=False)

    q_direct, _ = timed(direct_query)
    print(f"bm25 (llmlab)  build {t_ours:.3f} s  query {1e3 * q_ours / len(queries):.3f} ms")
    print(f"bm25s direct   build {t_direct:.3f} s  query {1e3 * q_direct / len(queries):.3f} ms")
    print(f"wrapper overhead  build {t_ours / t_direct - 1:+.1%}  query {q_ours / q_direct - 1:+.1%}")
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        print("rank-bm25      not installed (pip install rank-bm25): skipped")
        return
    t_rank, rank = timed(lambda: BM25Okapi([d.lower().split() for d in docs]))
    sample = queries[:50]  # pure Python scores every document per query
    q_rank, _ = timed(lambda: [rank.get_top_n(q.lower().split(), docs, n=k) for q in sample])
    print(f"rank-bm25      build {t_rank:.3f} s  query {1e3 * q_rank / len(sample):.3f} ms")


def bench_dense(n: int, n_queries: int, k: int, dim: int = 384) -> None:
    from llmlab.systems.rag.retrievers import Dense

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dim))
    x = centres[rng.integers(0, 200, n)] + rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(n, n_queries, replace=False)] + 0.1 * rng.normal(size=(n_queries, dim)).astype(
        np.float32
    )
    t_flat, flat = timed(lambda: Dense.build(x, hnsw_above=10**12))
    t_hnsw, hnsw = timed(lambda: Dense.build(x, hnsw_above=0))
    qf, exact = timed(lambda: [{r for r, _ in flat.search(v, k)} for v in q])
    qh, approx = timed(lambda: [{r for r, _ in hnsw.search(v, k)} for v in q])
    recall = np.mean([len(a & e) / k for a, e in zip(approx, exact)])
    print(f"dense flat     build {t_flat:.3f} s  query {1e3 * qf / n_queries:.3f} ms")
    print(
        f"dense hnsw     build {t_hnsw:.3f} s  query {1e3 * qh / n_queries:.3f} ms  recall@{k} vs flat {recall:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    docs = documents(args.docs)
    rng = random.Random(1)
    queries = [" ".join(rng.sample(d.split(), 4)) for d in rng.sample(docs, args.queries)]
    bench_bm25(docs, queries, args.k)
    bench_dense(args.docs, args.queries, args.k)


if __name__ == "__main__":
    main()
