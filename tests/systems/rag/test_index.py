"""The index directory: persisted and reloaded, guarded by its manifest, updated incrementally."""

from __future__ import annotations

import itertools
import json

import pytest

from llmlab.errors import UserError
from llmlab.systems.rag import build_index, load_index


def test_persisted_index_reloads_with_the_same_results(docs_dir, tmp_path, embedder, make_embedder):
    built = build_index([docs_dir], tmp_path / "idx", chunk_tokens=30, overlap=5, dense=embedder)
    again = load_index(tmp_path / "idx", dense=make_embedder())
    for mode in ("bm25", "dense", "hybrid"):
        for q in ("Who founded Kelmar?", "copper loom", "cold river"):
            assert again.search(q, k=3, mode=mode) == built.search(q, k=3, mode=mode)
    top = again.search("Who founded Kelmar?", k=1, mode="hybrid")[0]
    assert top.doc_id == "kelmar.md" and "Ilsa Dorne" in top.text
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["format"] == 1 and m["embedder"]["id"] == "test-hash" and m["embedder"]["dim"] == 64
    assert m["chunker"] == {"tokens": 30, "overlap": 5, "tokenizer": "test-hash"}
    assert set(m["documents"]) == {"kelmar.md", "brisk.txt", "sub/loom.html", "doc-9"}


def test_a_mismatched_embedder_is_a_clear_error(docs_dir, tmp_path, embedder, make_embedder):
    build_index([docs_dir], tmp_path / "idx", dense=embedder)
    with pytest.raises(UserError, match=r"built with embedder test-hash \(dim 64\), not other \(dim 64\)"):
        load_index(tmp_path / "idx", dense=make_embedder(id="other"))
    with pytest.raises(UserError, match=r"not test-hash \(dim 32\)"):
        load_index(tmp_path / "idx", dense=make_embedder(dim=32))


def test_format_version_and_missing_vectors_are_errors(docs_dir, tmp_path):
    index = build_index([docs_dir], tmp_path / "idx", dense="none")
    with pytest.raises(UserError, match="built without vectors"):
        index.search("Kelmar", mode="hybrid")
    with pytest.raises(UserError, match="--k must be an integer >= 1"):
        index.search("Kelmar", k=0, mode="bm25")
    assert index.search("Kelmar", k=1, mode="bm25")[0].doc_id in ("kelmar.md", "doc-9")
    manifest = tmp_path / "idx" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 99}))
    with pytest.raises(UserError, match="index format 99, this llmlab reads format 1"):
        load_index(tmp_path / "idx")


def test_add_and_remove_update_only_what_changed(docs_dir, tmp_path, embedder, make_embedder):
    index = build_index([docs_dir], tmp_path / "idx", dense=embedder)
    before = embedder.encoded
    (docs_dir / "brisk.txt").write_text("Brisk is a harbour town. It was founded by Mora Vell.")
    (docs_dir / "new.txt").write_text("Zandor is a mountain village.")
    report = index.add([docs_dir])
    assert report == {"added": 1, "updated": 1, "unchanged": 3}
    assert embedder.encoded - before == 2  # only the changed and the new document were embedded
    reloaded = load_index(tmp_path / "idx", dense=make_embedder())
    assert reloaded.search("Zandor", k=1, mode="bm25")[0].doc_id == "new.txt"
    assert "Mora Vell" in reloaded.search("Who founded Brisk?", k=1, mode="dense")[0].text
    assert reloaded.vectors.shape == (len(reloaded.chunks), 64)
    reloaded.remove(["new.txt"])
    final = load_index(tmp_path / "idx", dense=make_embedder())
    assert "new.txt" not in final.manifest["documents"]
    assert all(h.doc_id != "new.txt" for h in final.search("Zandor mountain village", k=10, mode="hybrid"))
    with pytest.raises(UserError, match="--remove 'nope': no such document"):
        final.remove(["nope"])


def test_an_llmlab_model_as_the_embedder(docs_dir, tmp_path, tiny_model_dir):
    index = build_index([docs_dir], tmp_path / "idx", chunk_tokens=16, overlap=4, dense=str(tiny_model_dir))
    info = json.loads((tmp_path / "idx" / "manifest.json").read_text())["embedder"]
    assert info["id"].startswith("llmlab:") and info["dim"] == 32
    assert all(c.text == c.text.strip() and c.end > c.start for c in index.chunks)
    again = load_index(tmp_path / "idx")  # reloads the same model from the manifest's spec
    assert again.search("copper loom", k=3, mode="dense") == index.search("copper loom", k=3, mode="dense")
    spans = again.embedder.spans("Kelmar, café!")
    assert spans[0][0] == 0 and spans[-1][1] == len("Kelmar, café!")
    # contiguous, except that the two byte tokens of "é" both map to that one character
    assert all(a[1] == b[0] or a == b for a, b in itertools.pairwise(spans))


def test_the_search_tool_reads_the_index(docs_dir, tmp_path):
    from llmlab.systems.tools import search, set_search_backend

    index = build_index([docs_dir], tmp_path / "idx", chunk_tokens=30, overlap=5, dense=None)
    set_search_backend(index.as_search_backend(mode="bm25"))
    try:
        out = search(query="Who founded Kelmar?", k=1)
    finally:
        set_search_backend(None)
    assert out.startswith("[1] ") and "Ilsa Dorne" in out and "\n\n[2]" not in out
