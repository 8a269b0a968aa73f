"""Ingest: every format read, ids relative to the folder, bad input one clear error or warning."""

from __future__ import annotations

import pytest

from llmlab.errors import UserError
from llmlab.systems.rag.ingest import IngestWarning, read_documents


def test_formats_titles_and_ids(docs_dir):
    docs = {d.id: d for d in read_documents([docs_dir])}
    assert set(docs) == {"kelmar.md", "brisk.txt", "sub/loom.html", "doc-9"}
    assert docs["kelmar.md"].title == "Kelmar" and docs["brisk.txt"].title == "brisk"
    loom = docs["sub/loom.html"]
    assert loom.title == "The copper loom"
    assert "invented by Tavo Renhald" in loom.text and "var x" not in loom.text and "<p>" not in loom.text
    assert docs["doc-9"].title == "Osk"
    assert read_documents([docs_dir / "brisk.txt"])[0].id == "brisk.txt"


def test_undecodable_bytes_warn_naming_the_file(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode("latin-1"))
    with pytest.warns(IngestWarning, match="latin1.txt: not valid UTF-8"):
        (doc,) = read_documents([tmp_path])
    assert doc.text == "caf\ufffd au lait"


def test_empty_folder_and_missing_path_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no documents"):
        read_documents([tmp_path / "empty"])
    with pytest.raises(UserError, match="no such file or folder"):
        read_documents([tmp_path / "nope"])


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: expected"):
        read_documents([f])
    f.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(UserError, match="document id 'a' already read"):
        read_documents([f])
