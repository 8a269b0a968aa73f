"""`llmlab sft` and `llmlab eval` end to end on a tiny model (seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab.cli import main
from llmlab.data.synthetic import conversations
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    tok = Tokenizer.train([m["content"] for c in conversations("mix")[:400] for m in c], 350)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=2, n_kv_head=2, d_ff=64, context=128
        )
    )
    d = tmp_path_factory.mktemp("base")
    save_model_dir(d, model, tok)
    return d


def test_sft_then_eval(base_dir, tmp_path, capsys):
    out = tmp_path / "sft"
    assert (
        main(
            [
                "sft",
                "--model",
                str(base_dir),
                "--data",
                "builtin:capitals",
                "--out",
                str(out),
                "--set",
                "sft.steps=3",
                "--set",
                "sft.batch_size=2",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and (out / "generation.json").is_file()

    assert main(["eval", "--model", str(out), "--task", "capitals,arithmetic", "--limit", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["chat"] is True and set(res["tasks"]) == {"capitals", "arithmetic"}
    assert res["tasks"]["capitals"]["shots"] == [0]  # a chat model: zero-shot through the template
    assert (out / "eval" / "eval.json").is_file() and (out / "eval" / "eval.png").stat().st_size > 1000

    assert (
        main(
            [
                "eval",
                "--model",
                str(base_dir),
                "--task",
                "reverse",
                "--shots",
                "0,2",
                "--limit",
                "2",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert res["chat"] is False and res["tasks"]["reverse"]["shots"] == [0, 2]


def test_bad_input_is_one_line_exit_2(base_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(base_dir), "--task", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmlab: unknown task 'nope'") and err.count("\n") == 1
    assert main(["eval", "--model", str(base_dir), "--task", "capitals", "--shots", "1,x"]) == 2
    assert "--shots" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n')
    assert main(["sft", "--model", str(base_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert (
        "bad.jsonl:1: message 1: a user message cannot come after a user message" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--task", "capitals", "--limit", "0"],
            "llmlab eval: argument --limit: must be an integer >= 1, got '0'",
        ),
        (
            ["--task", "capitals", "--limit", "-1"],
            "llmlab eval: argument --limit: must be an integer >= 1, got '-1'",
        ),
        (["--text", "EMPTY"], "llmlab: --text EMPTY: no text in it; perplexity needs at least one character"),
    ],
)
def test_limit_and_empty_text_are_one_line_exit_2(base_dir, tmp_path, capsys, argv, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    assert main(["eval", "--model", str(base_dir), "--out", str(tmp_path / "ev"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.replace("EMPTY", str(empty))) and err.count("\n") == 1, err
