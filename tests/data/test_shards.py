import math
import sys
import types

import numpy as np
import pytest

from llmlab.data import shards as S
from llmlab.errors import UserError
from llmlab.tokenizer import Tokenizer

DOCS = [f"Document {i}: " + " ".join(f"word{j % (i + 3)}" for j in range(60)) + "\n" for i in range(20)]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(DOCS, 285)


@pytest.fixture
def corpus(monkeypatch):
    """`load_documents` stand-in that returns the docs registered under a source name and counts calls."""
    calls = []
    registry = {"twenty": DOCS, "one": ["line one\nline two\nline three\nline four\n" * 20]}

    def load_documents(source):
        calls.append(source)
        return list(registry[source])

    monkeypatch.setitem(
        sys.modules, "llmlab.data.corpus", types.SimpleNamespace(load_documents=load_documents)
    )
    return calls


def test_roundtrip_bos_between_documents_and_split_by_document(tok, corpus, tmp_path):
    sh = S.build_shards("twenty", tok, val_fraction=0.1, cache_dir=tmp_path, verbose=False)
    bos = tok.special_tokens["<|bos|>"]
    assert sh.train.dtype == np.uint16 and sh.meta["train_docs"] == 18 and sh.meta["val_docs"] == 2
    decoded = []
    for split in (sh.train, sh.val):
        assert split[0] == bos
        parts = np.split(np.asarray(split), np.flatnonzero(np.asarray(split) == bos))[1:]
        decoded += [tok.decode(p[1:].tolist()) for p in parts]
    assert sorted(decoded) == sorted(DOCS)  # every document exactly once, in one split only
    val_docs = {
        tok.decode(p[1:].tolist())
        for p in np.split(np.asarray(sh.val), np.flatnonzero(np.asarray(sh.val) == bos))[1:]
    }
    assert len(val_docs) == 2 and not val_docs & set(decoded[: sh.meta["train_docs"]])
    assert sh.meta["train_tokens"] == len(sh.train) and sh.meta["val_tokens"] == len(sh.val)


def test_cached_and_reused(tok, corpus, tmp_path):
    a = S.build_shards("twenty", tok, cache_dir=tmp_path, verbose=False)
    b = S.build_shards("twenty", tok, cache_dir=tmp_path, verbose=False)
    assert a.dir == b.dir and corpus == ["twenty"]  # the second call did not read the corpus
    other = Tokenizer.train(DOCS, 275)
    c = S.build_shards("twenty", other, cache_dir=tmp_path, verbose=False)
    assert c.dir != a.dir and corpus == ["twenty", "twenty"]  # a different tokenizer rebuilds
    # A shard folder given as the source is loaded as is.
    assert S.build_shards(str(a.dir), tok).dir == a.dir


def test_parallel_encoding_equals_serial(tok):
    docs = DOCS * 3
    assert S.encode_documents(docs, tok, workers=3, verbose=False) == [tok.encode_ordinary(d) for d in docs]


def test_single_document_split_at_a_line_break(tok, corpus, tmp_path):
    sh = S.build_shards("one", tok, val_fraction=0.25, cache_dir=tmp_path, verbose=False)
    train_text = tok.decode(np.asarray(sh.train[1:]).tolist())
    val_text = tok.decode(np.asarray(sh.val[1:]).tolist())
    assert (
        train_text.endswith("\n")
        and train_text + val_text == "line one\nline two\nline three\nline four\n" * 20
    )
    assert 0.2 < len(val_text) / (len(train_text) + len(val_text)) < 0.3


def test_uint32_when_vocabulary_exceeds_uint16(tmp_path):
    path = tmp_path / "x.bin"
    S._write_split(path, [[70_000, 1]], bos_id=69_999, dtype=np.dtype(np.uint32))
    assert np.fromfile(path, dtype=np.uint32).tolist() == [69_999, 70_000, 1]


def test_corrupt_or_missing_shards_are_one_line_errors(tok, corpus, tmp_path):
    sh = S.build_shards("twenty", tok, cache_dir=tmp_path, verbose=False)
    with open(sh.dir / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match=r"train.bin: corrupt shard"):
        S.load_shards(sh.dir)
    # The cache heals itself: a damaged entry is rebuilt.
    assert (
        len(S.build_shards("twenty", tok, cache_dir=tmp_path, verbose=False).train) == sh.meta["train_tokens"]
    )
    (sh.dir / "val.bin").unlink()
    with pytest.raises(UserError, match="missing shard file"):
        S.load_shards(sh.dir)
    with pytest.raises(UserError, match="missing shards"):
        S.load_shards(tmp_path / "nowhere")
    (sh.dir / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt shard metadata"):
        S.load_shards(sh.dir)


def test_token_byte_lengths_and_unigram_baseline(tok):
    lengths = S.token_byte_lengths(tok, vocab_size=tok.vocab_size + 4)
    assert lengths[tok.special_tokens["<|bos|>"]] == 0 and lengths[-1] == 0 and lengths[ord("a")] == 1
    assert all(lengths[i] == len(tok.decode_bytes([i])) for i in range(256 + len(tok.merges)))
    train = np.array([1, 1, 2, 3], dtype=np.uint16)
    val = np.array([0, 1, 2], dtype=np.uint16)
    tb = np.array([1, 2, 3, 4])
    counts = np.array([0, 2, 1, 1]) + 1.0  # add-one smoothing
    p = counts / counts.sum()
    expect = -(math.log(p[1]) + math.log(p[2])) / (math.log(2) * (2 + 3))
    assert S.unigram_bpb(train, val, tb) == pytest.approx(expect, rel=1e-12)
