"""Token shards: a corpus tokenised once into flat memory-mapped arrays, reused by every run.

    <dir>/train.bin   [bos, doc₀ tokens…, bos, doc₁ tokens…, …]  raw little-endian uint16 (uint32 when
    <dir>/val.bin      the vocabulary has more than 65,536 ids)
    <dir>/tokenizer.json  the tokenizer that made them
    <dir>/meta.json   {"format": "llmlab-shards", "dtype", "vocab_size", "bos_id", "tokenizer_sha256",
                       "source", "train_tokens", "val_tokens", "train_docs", "val_docs", "train_bytes", ...}

Every document starts with `<|bos|>`, so the model learns where documents begin and a window that
crosses a boundary still sees it. Validation is split by *document* (a fixed choice of whole
documents, independent of the run's seed) so no validation text leaks into training; a corpus of a
single document is split at a line break instead.

Shards are cached under `$LLMLAB_HOME/shards/<key>/` with
    key = sha256(tokenizer file bytes, source description, val_fraction)
where the source description of a path includes every file's size and mtime, so editing the corpus
or changing the tokenizer rebuilds, and anything else reuses the arrays in milliseconds.

    shards = build_shards("shakespeare", tok)          # or load_shards(dir)
    shards.train, shards.val                           # np.memmap, 1-D
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.errors import UserError
from llmlab.io import atomic_write_json, llmlab_home, progress

FORMAT = "llmlab-shards"
VERSION = 1
BOS = "<|bos|>"
PARALLEL_CHUNK_CHARS = 1 << 20  # documents are handed to the tokenizer threads in groups of ~1 MB


@dataclass
class Shards:
    dir: Path
    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]

    @property
    def bos_id(self) -> int:
        return int(self.meta["bos_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])


# ---- fingerprints ---------------------------------------------------------------------------------
def tokenizer_sha256(tok) -> str:
    """sha256 of the tokenizer's saved file: equal hashes encode identically."""
    if isinstance(getattr(tok, "fingerprint", None), str):
        return tok.fingerprint
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokenizer.json"
        tok.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()


def source_fingerprint(source: Any) -> Any:
    """A JSON-able description of a corpus source that changes when its files change."""
    if isinstance(source, list | tuple):  # split source by source (see split_documents)
        return {"per_source_split": [source_fingerprint(s) for s in source]}
    import importlib

    generated = getattr(importlib.import_module("llmlab.data.corpus"), "GENERATED", {})
    path = Path(str(source)).expanduser()
    if str(source) in generated and not path.exists():  # made in code: its generator's version
        return {"generated": str(source), "version": generated[str(source)].version}
    if not path.exists():
        return str(source)  # a built-in corpus name: its content is pinned by the package version
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {
        "path": str(path.resolve()),
        "files": [
            [str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files
        ],
    }


def cache_key(tok_sha: str, source: Any, val_fraction: float) -> str:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": tok_sha,
        "source": source_fingerprint(source),
        "val_fraction": val_fraction,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---- split and tokenise ---------------------------------------------------------------------------
def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Whole documents to validation: round(n · val_fraction) of them (at least 1 when the fraction is
    positive), chosen by a fixed permutation. One document is split at the line break nearest to
    (1 − val_fraction) of its length. Documents from several sources (`corpus.Documents` with
    several groups) are split source by source, each exactly as it would be alone, so every source
    is represented in validation."""
    groups = getattr(docs, "groups", [len(docs)])
    if len(groups) > 1:
        train, val, start = [], [], 0
        for n in groups:
            t, v = split_documents(list(docs[start : start + n]), val_fraction)
            train, val, start = train + t, val + v, start + n
        return train, val
    if val_fraction <= 0:
        return list(docs), []
    if not 0 < val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if len(docs) == 1:
        text = docs[0]
        cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction)))
        cut = cut + 1 if cut > 0 else int(len(text) * (1 - val_fraction))
        return [text[:cut]], [text[cut:]]
    n_val = max(1, round(len(docs) * val_fraction))
    val_idx = set(np.random.default_rng(0).permutation(len(docs))[:n_val].tolist())
    return (
        [d for i, d in enumerate(docs) if i not in val_idx],
        [d for i, d in enumerate(docs) if i in val_idx],
    )


def _chunks(docs: list[str], max_chars: int) -> list[list[str]]:
    """Consecutive groups of documents of about `max_chars` each (order kept)."""
    groups, cur, size = [], [], 0
    for d in docs:
        cur.append(d)
        size += len(d)
        if size >= max_chars:
            groups.append(cur)
            cur, size = [], 0
    if cur:
        groups.append(cur)
    return groups


def encode_documents(
    docs: list[str], tok, workers: int | None = None, desc: str = "tokenize", verbose: bool = True
) -> list[list[int]]:
    """Token ids of every document (no specials), in order, in `workers` threads: the tiktoken
    engine behind `Tokenizer.encode_ordinary` releases the GIL, so threads run truly in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    total = sum(len(d) for d in docs)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    groups = _chunks(docs, max(1, min(PARALLEL_CHUNK_CHARS, total // max(1, 4 * workers))))

    def encode(group: list[str]) -> list[list[int]]:
        return [tok.encode_ordinary(d) for d in group]

    out: list[list[int]] = []
    with (
        progress(total=total, desc=desc, unit="B", disable=None if verbose else True) as bar,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        for group, ids in zip(groups, pool.map(encode, groups)):
            out.extend(ids)
            bar.update(sum(len(d) for d in group))
    return out


def _write_split(path: Path, encoded: list[list[int]], bos_id: int, dtype: np.dtype) -> int:
    n = 0
    with open(path, "wb") as f:
        for ids in encoded:
            arr = np.empty(len(ids) + 1, dtype=dtype)
            arr[0] = bos_id
            arr[1:] = ids
            f.write(arr.tobytes())
            n += len(arr)
        f.flush()
        os.fsync(f.fileno())
    return n


# ---- build / load ---------------------------------------------------------------------------------
def build_shards(
    source: Any,
    tok,
    *,
    val_fraction: float = 0.05,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    verbose: bool = True,
) -> Shards:
    """Tokenise `source` (anything `llmlab.data.corpus.load_documents` accepts) with `tok` into
    cached shards, or return the cached ones. A path to an existing shard folder is loaded as is."""
    if isinstance(source, str | os.PathLike) and (Path(source) / "meta.json").is_file():
        return load_shards(source)
    if BOS not in tok.special_tokens:
        raise UserError(
            f"tokenizer has no {BOS} special token (it separates documents); "
            "train it with the default special tokens"
        )
    tok_sha = tokenizer_sha256(tok)
    root = Path(cache_dir) if cache_dir is not None else llmlab_home() / "shards"
    final = root / cache_key(tok_sha, source, val_fraction)
    if (final / "meta.json").is_file():
        try:
            return load_shards(final)
        except UserError:
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache entry: rebuild it

    from llmlab.data.corpus import load_documents

    docs = load_documents(source)  # non-empty documents, grouped by source for the split
    if not docs:
        raise UserError(f"data.source {source!r}: no text found")
    train_docs, val_docs = split_documents(docs, val_fraction)
    bos_id = tok.special_tokens[BOS]
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65536 else np.uint32)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        enc_train = encode_documents(train_docs, tok, workers, "tokenize train", verbose)
        enc_val = encode_documents(val_docs, tok, workers, "tokenize val", verbose)
        max_id = max((max(ids) for ids in enc_train + enc_val if ids), default=bos_id)
        if max(max_id, bos_id) >= tok.vocab_size:
            raise UserError(
                f"tokenizer produced id {max_id} ≥ its vocab_size {tok.vocab_size}; the tokenizer file is inconsistent"
            )
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype.name,
            "vocab_size": tok.vocab_size,
            "bos_id": bos_id,
            "tokenizer_sha256": tok_sha,
            "source": source_fingerprint(source),
            "val_fraction": val_fraction,
            "train_tokens": _write_split(tmp / "train.bin", enc_train, bos_id, dtype),
            "val_tokens": _write_split(tmp / "val.bin", enc_val, bos_id, dtype),
            "train_docs": len(train_docs),
            "val_docs": len(val_docs),
            "train_bytes": sum(len(d.encode("utf-8")) for d in train_docs),
            "val_bytes": sum(len(d.encode("utf-8")) for d in val_docs),
        }
        tok.save(tmp / "tokenizer.json")  # a shard folder is self-describing: usable as data.source alone
        atomic_write_json(tmp / "meta.json", meta)
        try:
            os.replace(tmp, final)  # atomic publish; fails if another process published first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_shards(final)


def load_shards(path: str | os.PathLike) -> Shards:
    """Open a shard folder as read-only memmaps, checking it against its meta.json."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise UserError(f"{path}: missing shards (no meta.json); rebuild them by running without this path")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{meta_file}: corrupt shard metadata; delete {path} to rebuild") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(
            f"{meta_file}: not llmlab shards (format={meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    dtype = np.dtype(meta.get("dtype", "uint16"))
    arrays = {}
    for split in ("train", "val"):
        f = path / f"{split}.bin"
        n = int(meta.get(f"{split}_tokens", -1))
        if not f.is_file():
            raise UserError(f"{f}: missing shard file; delete {path} to rebuild")
        if f.stat().st_size != n * dtype.itemsize:
            raise UserError(
                f"{f}: corrupt shard ({f.stat().st_size} bytes, expected {n} tokens × "
                f"{dtype.itemsize} bytes); delete {path} to rebuild"
            )
        arrays[split] = np.memmap(f, dtype=dtype, mode="r") if n > 0 else np.empty(0, dtype=dtype)
    return Shards(path, arrays["train"], arrays["val"], meta)


# ---- byte lengths and the unigram baseline --------------------------------------------------------
def token_byte_lengths(tok, vocab_size: int | None = None) -> np.ndarray:
    """UTF-8 byte length of every token id (0 for special tokens and ids past the tokenizer), the
    denominator of bits per byte."""
    n = vocab_size or tok.vocab_size
    lengths = np.zeros(n, dtype=np.int64)
    specials = set(tok.special_tokens.values())
    for i in range(min(n, tok.vocab_size)):
        if i not in specials:
            lengths[i] = len(tok.decode_bytes([i]))
    return lengths


def unigram_bpb(train: np.ndarray, val: np.ndarray, token_bytes: np.ndarray) -> float:
    """Bits per byte of the best context-free model: p(v) = (count_train(v) + 1) / (N + V) (add-one),
    scored on the validation targets val[1:]. A trained model should beat this by a wide margin."""
    V = len(token_bytes)
    counts = np.bincount(np.asarray(train), minlength=V).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = np.asarray(val[1:], dtype=np.int64)
    n_bytes = float(token_bytes[targets].sum())
    return float(-logp[targets].sum() / (math.log(2) * n_bytes)) if n_bytes else math.inf
