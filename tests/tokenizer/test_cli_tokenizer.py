"""`llmlab tokenizer ...` end to end through `llmlab.cli.main`, including every bad-input path."""

from __future__ import annotations

import json

import pytest

from llmlab.cli import main
from llmlab.tokenizer import Tokenizer

from .conftest import CODE, ENGLISH, UNICODE


@pytest.fixture()
def corpus(tmp_path):
    (tmp_path / "a.txt").write_text(ENGLISH * 3)
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": CODE}) + "\n" + json.dumps({"text": UNICODE}) + "\n"
    )
    return tmp_path


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmlab"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_encode_decode_stats(capsys, corpus, tmp_path):
    out_file = tmp_path / "tok.json"
    rc, out, _ = run(
        capsys,
        "tokenizer",
        "train",
        "--input",
        str(corpus / "a.txt"),
        str(corpus / "b.jsonl"),
        "--vocab-size",
        "400",
        "--out",
        str(out_file),
        "--special",
        "<|extra|>",
        "--json",
    )
    assert rc == 0
    summary = json.loads(out)
    assert summary["vocab_size"] == 400 and summary["special_tokens"] == 11 and summary["documents"] == 3
    tok = Tokenizer.load(out_file)
    assert summary["fingerprint"] == tok.fingerprint
    assert tok.special_tokens["<|extra|>"] == 399
    # The same tokenizer from Python, same corpus (folder input = its files, sorted).
    assert (
        tok.merges
        == Tokenizer.train([ENGLISH * 3, CODE, UNICODE], 400, special_tokens=list(tok.special_tokens)).merges
    )

    rc, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(out_file), "--text", "To be, or not")
    ids = json.loads(out)
    assert rc == 0 and ids == tok.encode("To be, or not")
    rc, out, _ = run(capsys, "tokenizer", "decode", "--tokenizer", str(out_file), "--ids", json.dumps(ids))
    assert rc == 0 and out == "To be, or not"
    rc, out, _ = run(
        capsys, "tokenizer", "encode", "--tokenizer", str(out_file), "--text", "<|end|>", "--allow-special"
    )
    assert json.loads(out) == [tok.special_tokens["<|end|>"]]

    rc, out, _ = run(
        capsys, "tokenizer", "stats", "--tokenizer", str(out_file), "--input", str(corpus), "--json"
    )
    stats = json.loads(out)
    n_bytes = len((ENGLISH * 3 + CODE + UNICODE).encode())
    assert rc == 0 and stats["bytes"] == n_bytes
    assert stats["tokens"] == sum(len(tok.encode(t)) for t in [ENGLISH * 3, CODE, UNICODE])
    assert stats["bytes_per_token"] == pytest.approx(n_bytes / stats["tokens"])


def test_encode_reads_stdin(capsys, corpus, tmp_path, monkeypatch):
    import io

    out_file = tmp_path / "tok.json"
    Tokenizer.train([ENGLISH], 300).save(out_file)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello"))
    rc, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(out_file))
    assert rc == 0 and json.loads(out) == Tokenizer.load(out_file).encode("hello")


def test_bad_inputs_are_one_line_errors(capsys, corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out_file = str(tmp_path / "tok.json")
    train = ["tokenizer", "train", "--out", out_file]

    assert_one_line_error(*run(capsys, *train, "--input", str(empty), "--vocab-size", "300")[::2], "empty")
    assert_one_line_error(
        *run(capsys, *train, "--input", str(corpus), "--vocab-size", "200")[::2], "vocab size 200", "266"
    )
    assert_one_line_error(
        *run(capsys, *train, "--input", str(tmp_path / "nope.txt"), "--vocab-size", "300")[::2],
        "nope.txt",
        "no such file",
    )
    assert_one_line_error(
        *run(capsys, *train, "--input", str(corpus), "--vocab-size", "300", "--pattern", "gpt3")[::2],
        "unknown split pattern 'gpt3'",
    )

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "llmlab-bpe", "version": 1, "merges": "oops"}')
    assert_one_line_error(
        *run(capsys, "tokenizer", "encode", "--tokenizer", str(bad), "--text", "x")[::2],
        "bad.json",
        "malformed tokenizer file",
    )
    assert_one_line_error(
        *run(capsys, "tokenizer", "encode", "--tokenizer", str(tmp_path / "missing.json"), "--text", "x")[
            ::2
        ],
        "missing.json",
    )

    Tokenizer.train([ENGLISH], 300).save(out_file)
    assert_one_line_error(
        *run(capsys, "tokenizer", "encode", "--tokenizer", out_file, "--text", "<|end|>")[::2],
        "<|end|>",
        "allowed_special",
    )
    assert_one_line_error(
        *run(capsys, "tokenizer", "decode", "--tokenizer", out_file, "--ids", "[1, 99999]")[::2], "99999"
    )
    assert_one_line_error(
        *run(capsys, "tokenizer", "decode", "--tokenizer", out_file, "--ids", "[1,")[::2], "--ids"
    )


def test_undecodable_bytes_are_replaced_with_a_warning(capsys, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait ".encode("latin-1") * 20)
    rc, _, err = run(
        capsys,
        "tokenizer",
        "train",
        "--input",
        str(bad),
        "--vocab-size",
        "270",
        "--out",
        str(tmp_path / "tok.json"),
    )
    assert rc == 0
    assert "warning" in err and "latin1.txt" in err and len(err.strip().splitlines()) == 1
    tok = Tokenizer.load(tmp_path / "tok.json")
    assert tok.decode(tok.encode("caf\ufffd")) == "caf\ufffd"


@pytest.mark.slow
def test_shakespeare_end_to_end(capsys, tmp_path):
    """The demo's tokenizer step: fetch the corpus (network once), train, measure."""
    rc, _, err = run(capsys, "data", "fetch", "shakespeare")
    if rc != 0:
        pytest.skip(f"cannot fetch the corpus: {err.strip()}")
    out_file = str(tmp_path / "tok.json")
    rc, out, _ = run(
        capsys,
        "tokenizer",
        "train",
        "--input",
        "shakespeare",
        "--vocab-size",
        "2048",
        "--out",
        out_file,
        "--json",
    )
    assert rc == 0 and json.loads(out)["documents"] == 42
    rc, out, _ = run(
        capsys, "tokenizer", "stats", "--tokenizer", out_file, "--input", "shakespeare", "--json"
    )
    stats = json.loads(out)
    assert rc == 0 and 2.5 < stats["bytes_per_token"] < 4.0
