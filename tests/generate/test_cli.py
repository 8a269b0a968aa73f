"""`llmlab generate`, `llmlab chat`, `llmlab export hf` end to end on a tiny model directory."""

from __future__ import annotations

import io
import json

import pytest
import torch

import llmlab.cli
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir

TEXT = "to be or not to be, that is the question. Whether 'tis nobler in the mind to suffer. " * 30


def main(argv):
    """The real CLI, routing only this area's commands (others' modules may not exist yet)."""
    saved = llmlab.cli.COMMANDS
    llmlab.cli.COMMANDS = ["generate", "export"]
    try:
        return llmlab.cli.main(argv)
    finally:
        llmlab.cli.COMMANDS = saved


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train([TEXT], vocab_size=256 + 30 + 10, engine="python", show_progress=False)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size,
            n_layer=1,
            d_model=32,
            n_head=4,
            n_kv_head=2,
            d_ff=32,
            context=32,
            init_std=0.2,
        )
    )
    d = tmp_path_factory.mktemp("m") / "base"
    save_model_dir(d, model, tok)
    chat = d.parent / "chat"
    save_model_dir(
        chat,
        model,
        tok,
        generation={
            "chat_template": "llmlab-v2",
            "stop_tokens": ["<|end|>", "<|bos|>"],
            "temperature": 0.0,
            "max_new_tokens": 8,
        },
    )
    return d, chat


def test_generate_json_and_plain(model_dir, capsys):
    base, _ = model_dir

    def generate(*extra: str) -> str:
        argv = ["generate", "--model", str(base), "--prompt", "to be", "--max-new-tokens", "5", *extra]
        assert main(argv) == 0
        return capsys.readouterr().out

    out = json.loads(generate("--temperature", "0", "--json", "--logprobs", "2"))
    assert out["completion_tokens"] == len(out["tokens"]) <= 5 and len(out["logprobs"]) == len(out["tokens"])
    # Plain and streamed output print exactly the JSON's text.
    assert generate("--temperature", "0") == out["text"] + "\n"
    assert generate("--temperature", "0", "--stream") == out["text"] + "\n"
    assert json.loads(generate("--num-beams", "2", "--json"))["finish_reason"] in ("stop", "length")


def test_chat_model_uses_its_template(model_dir, capsys):
    _, chat = model_dir
    assert main(["generate", "--model", str(chat), "--prompt", "hi", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chat"] is True and out["completion_tokens"] <= 8  # generation.json's max_new_tokens


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--top-p", "0"], "argument --top-p: must be a number in (0, 1], got '0'"),
        (["--top-p", "1.5"], "argument --top-p: must be a number in (0, 1], got '1.5'"),
        (["--temperature", "-1"], "argument --temperature: must be a number >= 0, got '-1'"),
        (["--num-beams", "0"], "argument --num-beams: must be an integer >= 1, got '0'"),
        (["--device", "foo"], "argument --device: must be one of auto, cpu, cuda, mps, got 'foo'"),
        (["--prompt", "x" * 100], "context window"),
    ],
)
def test_bad_input_is_one_line_exit_2(model_dir, capsys, argv, msg):
    base, _ = model_dir
    args = ["generate", "--model", str(base), "--prompt", "hi", *argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [["generate", "--prompt", "hi"], ["chat"]])
def test_device_cuda_without_cuda_is_one_line_exit_2(model_dir, capsys, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with a GPU
    base, _ = model_dir
    assert main([command[0], "--model", str(base), *command[1:], "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "llmlab: --device cuda: no CUDA device is available here; use auto or cpu\n"


def test_not_a_model_dir(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--prompt", "hi"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_chat_repl(model_dir, capsys, monkeypatch):
    import llmlab.generate

    _, chat = model_dir
    real, prompts = llmlab.generate.generate, []

    def spy(model, tok, prompt, **kw):
        prompts.append(tok.decode(prompt))
        return real(model, tok, prompt, **kw)

    monkeypatch.setattr(llmlab.generate, "generate", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nmore\n/reset\nagain\n/exit\nnever\n"))
    assert main(["chat", "--model", str(chat)]) == 0
    assert "conversation reset" in capsys.readouterr().err
    assert len(prompts) == 3  # "never" comes after /exit
    assert prompts[1].startswith("<|bos|><|user|>hello<|end|><|assistant|>") and "<|user|>more" in prompts[1]
    assert prompts[2] == "<|bos|><|user|>again<|end|><|assistant|>"  # /reset forgot the first two turns


def test_export_cli(model_dir, tmp_path, capsys):
    base, _ = model_dir
    assert main(["export", "hf", "--model", str(base), "--out", str(tmp_path / "hf"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
