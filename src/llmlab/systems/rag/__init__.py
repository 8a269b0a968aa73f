"""Retrieval-augmented generation: index a folder, retrieve (BM25, dense, hybrid), answer with citations.

    from llmlab.systems.rag import build_index, load_index, answer
    index = build_index(["docs/"], "runs/index", chunk_tokens=200, overlap=40, dense="minilm")
    hits = index.search("Who founded Kelmar?", k=5, mode="hybrid")  # [Hit(doc_id, chunk_id, text, score)]
    ans = answer(model, tok, index, "Who founded Kelmar?", k=4)     # .text, .citations, .hits

Modules: `ingest` (files → documents), `chunking` (documents → token-sized chunks), `embed` (the
MiniLM sentence encoder in plain PyTorch), `retrievers` (bm25s, faiss, reciprocal rank fusion),
`index` (the index directory), `prompt` and `answering` (sources in, cited answer out), `evaluate`
(metrics over a QA file), `stage` (the speedrun's `index` and `rag_eval`). The heavy libraries are
imported when first used, so `import llmlab.systems.rag` needs none of them.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "build_index": "index",
    "load_index": "index",
    "Index": "index",
    "Hit": "retrievers",
    "answer": "answering",
    "Answer": "answering",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"llmlab.systems.rag.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'llmlab.systems.rag' has no attribute {name!r}")


__all__ = list(_EXPORTS)
