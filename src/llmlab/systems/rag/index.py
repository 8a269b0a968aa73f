"""The index directory: chunks, a BM25 index, dense vectors, and a manifest that says how they were made.

    DIR/manifest.json   {"format": 1, "chunker": {"tokens", "overlap", "tokenizer"},
                         "embedder": {"id", "dim", "spec"} or null, "dense_kind": "flat"|"hnsw"|null,
                         "documents": {doc id: {"hash", "title", "source", "chunks"}}}
    DIR/chunks.jsonl    one chunk per line: chunk_id, doc_id, title, text, start, end
    DIR/bm25/           bm25s's saved index over the chunk texts (row i = line i of chunks.jsonl)
    DIR/vectors.npy     float32 [chunks, dim], unit rows (row i ↔ chunk i); DIR/dense.faiss

`build_index` writes it, `load_index` reads it (a different format version, embedder or dimension is
an error), `Index.add` / `Index.remove` update documents: an unchanged hash is kept as it is, a
changed or new document is re-chunked and only its chunks are embedded; BM25's statistics (IDF,
average length) cover the whole collection, so its index is rebuilt from the chunks each time.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from llmlab.errors import UserError
from llmlab.io import atomic_write_json, atomic_write_text
from llmlab.systems.rag.chunking import Chunk, check_sizes, chunk_document
from llmlab.systems.rag.embed import WordSpans, get_embedder
from llmlab.systems.rag.ingest import Document, read_documents
from llmlab.systems.rag.retrievers import BM25, HNSW_ABOVE, Dense, Hit, rrf

FORMAT = 1
MODES = ("bm25", "dense", "hybrid")
CANDIDATES = 50  # per retriever, before fusion


class Index:
    """A loaded index directory; `search` is the one query interface (a faiss IVF/HNSW index or an
    external vector store would sit behind it unchanged)."""

    def __init__(self, path: Path, manifest: dict, chunks: list[Chunk], embedder, vectors: np.ndarray | None):
        self.path, self.manifest, self.chunks = path, manifest, chunks
        self.embedder, self.vectors = embedder, vectors
        self.bm25: BM25 | None = None
        self.dense: Dense | None = None

    @property
    def has_dense(self) -> bool:
        return self.manifest["embedder"] is not None

    def _spans(self):
        return (self.embedder or WordSpans()).spans

    def search(
        self, query: str, k: int = 5, mode: str = "hybrid", vector: np.ndarray | None = None
    ) -> list[Hit]:
        """The k best chunks for `query`: BM25, dense (cosine) or hybrid (RRF of both). `vector`: the
        query's embedding when already computed (`embed_queries` does many in one batch)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"--k must be an integer >= 1, got {k!r}")
        if mode not in MODES:
            raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode != "bm25" and not self.has_dense:
            raise UserError(
                f"--mode {mode}: index {self.path} was built without vectors (--dense none); use --mode bm25"
            )
        depth = max(k, CANDIDATES)
        if mode != "bm25" and vector is None:
            vector = self.embedder.encode([query])[0]
        if mode == "bm25":
            ranked = self.bm25.search(query, k)
        elif mode == "dense":
            ranked = self.dense.search(vector, k)
        else:
            lexical = [r for r, _ in self.bm25.search(query, depth)]
            semantic = [r for r, _ in self.dense.search(vector, depth)]
            ranked = rrf([lexical, semantic])[:k]
        return [self._hit(row, score) for row, score in ranked]

    def as_search_backend(self, mode: str = "hybrid"):
        """`backend(query, k) -> passages` for the `search` tool (`tools.set_search_backend`): each
        passage is its document's title (or id) and the chunk's text."""

        def backend(query: str, k: int) -> list[str]:
            return [f"{h.title or h.doc_id}: {h.text}" for h in self.search(query, k=k, mode=mode)]

        return backend

    def embed_queries(self, queries: Sequence[str]) -> list[np.ndarray | None]:
        """The queries' embeddings in one batch (None each when the index has no vectors)."""
        if self.embedder is None:
            return [None] * len(queries)
        return list(self.embedder.encode(list(queries)))

    def _hit(self, row: int, score: float) -> Hit:
        c = self.chunks[row]
        return Hit(c.doc_id, c.chunk_id, c.text, score, c.title)

    # ---- updates ----------------------------------------------------------------------------------
    def add(self, inputs: Iterable[str | os.PathLike]) -> dict:
        """Add or update the documents under `inputs`; returns {"added", "updated", "unchanged"}."""
        docs = read_documents(inputs)
        known = self.manifest["documents"]
        changed = [d for d in docs if d.id in known and known[d.id]["hash"] != d.hash]
        new = [d for d in docs if d.id not in known]
        self._drop({d.id for d in changed})
        self._append(changed + new)
        self.save()
        return {"added": len(new), "updated": len(changed), "unchanged": len(docs) - len(new) - len(changed)}

    def remove(self, doc_ids: Sequence[str]) -> dict:
        """Remove documents by id; an id not in the index is an error naming it."""
        unknown = [d for d in doc_ids if d not in self.manifest["documents"]]
        if unknown:
            raise UserError(f"--remove {unknown[0]!r}: no such document in {self.path}")
        self._drop(set(doc_ids))
        self.save()
        return {"removed": len(set(doc_ids))}

    def _drop(self, doc_ids: set[str]) -> None:
        keep = [i for i, c in enumerate(self.chunks) if c.doc_id not in doc_ids]
        self.chunks = [self.chunks[i] for i in keep]
        if self.vectors is not None:
            self.vectors = self.vectors[keep]
        for d in doc_ids:
            self.manifest["documents"].pop(d, None)

    def _append(self, docs: list[Document]) -> None:
        ch = self.manifest["chunker"]
        new: list[Chunk] = []
        for d in docs:
            chunks = chunk_document(d.id, d.title, d.text, self._spans(), ch["tokens"], ch["overlap"])
            self.manifest["documents"][d.id] = {
                "hash": d.hash,
                "title": d.title,
                "source": d.source,
                "chunks": len(chunks),
            }
            new += chunks
        self.chunks += new
        if self.embedder is not None and new:
            fresh = self.embedder.encode([_embed_text(c) for c in new]).astype(np.float32)
            self.vectors = (
                fresh
                if self.vectors is None or not len(self.vectors)
                else np.concatenate([self.vectors, fresh])
            )

    def save(self) -> None:
        """Write every file of the directory (BM25 and faiss rebuilt from the chunks and vectors)."""
        if not self.chunks:
            raise UserError(f"{self.path}: the index would hold no chunks; keep at least one document")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.path / "chunks.jsonl", "".join(json.dumps(c.to_dict()) + "\n" for c in self.chunks)
        )
        self.bm25 = BM25.build([_embed_text(c) for c in self.chunks])
        shutil.rmtree(self.path / "bm25", ignore_errors=True)
        self.bm25.save(self.path / "bm25")
        if self.embedder is not None:
            np.save(self.path / "vectors.npy", self.vectors)
            self.dense = Dense.build(self.vectors, self.manifest.get("hnsw_above", HNSW_ABOVE))
            self.dense.save(self.path / "dense.faiss")
            self.manifest["dense_kind"] = self.dense.kind
        atomic_write_json(self.path / "manifest.json", self.manifest)


def _embed_text(c: Chunk) -> str:
    """What is embedded and BM25-indexed for a chunk: its title, then its text."""
    return f"{c.title}\n{c.text}" if c.title else c.text


def _embedder_info(embedder, spec: str) -> dict | None:
    return None if embedder is None else {"id": embedder.id, "dim": int(embedder.dim), "spec": spec}


def build_index(
    inputs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    chunk_tokens: int = 200,
    overlap: int = 40,
    dense="minilm",
    hnsw_above: int = HNSW_ABOVE,
) -> Index:
    """Read, chunk, embed and index `inputs` into the directory `out` (replacing an index there).
    `dense`: "minilm", "none", an llmlab model directory, or an embedder object."""
    check_sizes(chunk_tokens, overlap)
    docs = read_documents(inputs)
    embedder = get_embedder(dense) if isinstance(dense, str) else dense
    spec = dense if isinstance(dense, str) else getattr(embedder, "id", "custom")
    manifest = {
        "format": FORMAT,
        "chunker": {"tokens": chunk_tokens, "overlap": overlap, "tokenizer": (embedder or WordSpans()).id},
        "embedder": _embedder_info(embedder, spec),
        "dense_kind": None,
        "hnsw_above": hnsw_above,
        "documents": {},
    }
    path = Path(out)
    for name in ("chunks.jsonl", "vectors.npy", "dense.faiss", "manifest.json"):
        (path / name).unlink(missing_ok=True)
    index = Index(path, manifest, [], embedder, None)
    index._append(docs)
    index.save()
    return index


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"--index {path}: not an index directory (no manifest.json); build one with `llmlab rag index`"
        ) from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path / 'manifest.json'}: malformed JSON ({e.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(
            f"--index {path}: index format {got!r}, this llmlab reads format {FORMAT}; rebuild it with `llmlab rag index`"
        )
    return manifest


def _check_embedder(path: Path, want: dict, embedder) -> None:
    if embedder is None or (embedder.id == want["id"] and int(embedder.dim) == want["dim"]):
        return
    raise UserError(
        f"--index {path}: built with embedder {want['id']} (dim {want['dim']}), "
        f"not {embedder.id} (dim {embedder.dim}); rebuild the index or use the same embedder"
    )


def load_index(path: str | os.PathLike, dense=None) -> Index:
    """The index in `path`. `dense` (a spec or embedder; default: the one it was built with) must
    match the manifest's embedder id and dimension."""
    path = Path(path)
    manifest = _read_manifest(path)
    info = manifest["embedder"]
    embedder = None
    if info is not None:
        embedder = (
            get_embedder(info["spec"])
            if dense is None
            else (get_embedder(dense) if isinstance(dense, str) else dense)
        )
        _check_embedder(path, info, embedder)
    elif dense not in (None, "none"):
        raise UserError(f"--index {path}: built without vectors (--dense none); rebuild it to add {dense}")
    lines = (path / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
    chunks = [Chunk(**json.loads(line)) for line in lines if line]
    vectors = None
    if info is not None:
        vectors = np.load(path / "vectors.npy")
        if vectors.shape != (len(chunks), info["dim"]):
            raise UserError(
                f"{path / 'vectors.npy'}: shape {vectors.shape}, expected ({len(chunks)}, {info['dim']}); rebuild the index"
            )
    index = Index(path, manifest, chunks, embedder, vectors)
    index.bm25 = BM25.load(path / "bm25", len(chunks))
    if info is not None:
        index.dense = Dense.load(path / "dense.faiss")
    return index
