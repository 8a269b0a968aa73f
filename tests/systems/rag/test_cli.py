"""`llmlab rag`: index, search, update and eval from the command line; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest

from llmlab.cli import main


def run(capsys, *argv):
    rc = main(["rag", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_index_search_update_and_eval(docs_dir, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    rc, out, _ = run(capsys, "index", "--input", str(docs_dir), "--out", idx, "--dense", "none")
    assert rc == 0 and "documents: 4" in out
    rc, out, _ = run(capsys, "search", "--index", idx, "--query", "copper loom", "--mode", "bm25", "--json")
    assert rc == 0 and json.loads(out)[0]["doc_id"] == "sub/loom.html"
    (docs_dir / "new.txt").write_text("Zandor is a mountain village.")
    rc, out, _ = run(capsys, "index", "--out", idx, "--add", str(docs_dir / "new.txt"), "--remove", "doc-9")
    assert rc == 0 and "removed: 1, added: 1, updated: 0, unchanged: 0, chunks: 4" in out
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"question": "Where is Zandor?", "answers": ["mountain"], "relevant": ["new.txt"]}) + "\n"
    )
    rc, out, _ = run(capsys, "eval", "--index", idx, "--qa", str(qa), "--json")
    assert rc == 0 and json.loads(out)["retrieval"]["bm25"]["recall@1"] == 1.0


def test_bad_input_is_one_line_and_exit_2(docs_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    idx = str(tmp_path / "idx")
    cases = [
        (["index", "--input", str(tmp_path / "empty"), "--out", idx], "no documents"),
        (
            ["index", "--input", str(docs_dir), "--out", idx, "--chunk-tokens", "8", "--overlap", "8"],
            "--overlap",
        ),
        (["search", "--index", str(tmp_path), "--query", "x"], "not an index directory"),
    ]
    for argv, match in cases:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert run(capsys, "index", "--input", str(docs_dir), "--out", idx, "--dense", "none")[0] == 0
    bad_qa = tmp_path / "qa.jsonl"
    bad_qa.write_text('{"question": "ok?", "answers": []}\n{"answers": ["x"]}\n')
    for argv, match in [
        (["search", "--index", idx, "--query", "x", "--mode", "dense"], "built without vectors"),
        (["search", "--index", idx, "--query", "x", "--k", "0"], "--k: must be an integer >= 1"),
        (["eval", "--index", idx, "--qa", str(bad_qa)], f"{bad_qa}:2: a QA line needs a string 'question'"),
    ]:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_undecodable_bytes_warn_on_one_line(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_bytes(b"caf\xe9")
    rc, _, err = run(
        capsys, "index", "--input", str(tmp_path / "d"), "--out", str(tmp_path / "i"), "--dense", "none"
    )
    assert rc == 0 and err.strip().startswith("llmlab: warning: ") and "x.txt: not valid UTF-8" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["index", "--help"], ["eval", "--help"]])
def test_help(argv, capsys):
    assert run(capsys, *argv)[0] == 0


def test_ask_answers_and_names_its_sources(docs_dir, tmp_path, tiny_model_dir, capsys):
    idx = str(tmp_path / "idx")
    assert run(capsys, "index", "--input", str(docs_dir), "--out", idx, "--dense", "none")[0] == 0
    rc, out, _ = run(
        capsys,
        "ask",
        "--index",
        idx,
        "--model",
        str(tiny_model_dir),
        "--question",
        "Who founded Kelmar?",
        "--json",
    )
    r = json.loads(out)
    assert rc == 0 and r["sources"] and set(r["invalid_citations"]) <= set(r["citations"])
    rc, _, err = run(
        capsys, "ask", "--index", idx, "--model", str(tiny_model_dir), "--question", "q", "--mode", "hybrid"
    )
    assert rc == 2 and "built without vectors" in err
