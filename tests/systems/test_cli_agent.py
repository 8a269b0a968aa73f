"""`llmlab agent`, `llmlab generate/chat --tools` on a tiny model directory; bad input is one line, exit 2.
And the real agent run against `llmlab serve` through the official openai client, once the server exists."""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest
import torch

import llmlab.cli
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir

TEXT = "What is 2 + 3? It is 5. The calculator says 37 * 91 = 3367. " * 20


def main(argv):
    saved = llmlab.cli.COMMANDS
    llmlab.cli.COMMANDS = ["generate", "agent"]
    try:
        return llmlab.cli.main(argv)
    finally:
        llmlab.cli.COMMANDS = saved


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train([TEXT], vocab_size=256 + 10 + 25, engine="python", show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=4, n_kv_head=2, d_ff=32, context=512
    )
    d = tmp_path_factory.mktemp("m") / "chat"
    gen = {
        "chat_template": "llmlab-v2",
        "stop_tokens": ["<|end|>", "<|bos|>"],
        "temperature": 0.0,
        "max_new_tokens": 6,
    }
    save_model_dir(d, Transformer(cfg), tok, generation=gen)
    return d


def test_agent_on_a_local_model_prints_steps_and_writes_a_trace(chat_dir, tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    argv = ["agent", "--model", str(chat_dir), "--task", "What is 2 + 3?", "--max-steps", "2"]
    assert main([*argv, "--max-new-tokens", "6", "--trace", str(trace), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "── step 1" in out and "answer (" in out
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["type"] == "start" and records[0]["tools"] == ["calculator"]
    assert records[-1]["type"] == "end" and records[-1]["stopped_because"] in (
        "final_answer",
        "max_steps",
        "stuck",
    )


def test_generate_with_tools_renders_them_into_the_prompt(chat_dir, capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                str(chat_dir),
                "--prompt",
                "2+3?",
                "--tools",
                "calculator",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "--model", "DIR", "--task", "t", "--tools", "calculator,shell"], "unknown tool 'shell'"),
        (["agent", "--model", "DIR", "--task", "t", "--max-steps", "0"], "--max-steps"),
        (["generate", "--model", "DIR", "--prompt", "p", "--tools", "nope"], "unknown tool 'nope'"),
        (["agent", "--base-url", "http://127.0.0.1:9/v1", "--task", "t"], "--model-name: required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(chat_dir, capsys, argv, message):
    argv = [str(chat_dir) if a == "DIR" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="the openai client is not installed")
def test_an_unreachable_base_url_is_one_line_and_exit_2(capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    assert main(["agent", "--base-url", url, "--model-name", "m", "--task", "t"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llmlab.serve") is None, reason="llmlab.serve does not exist yet"
)
@pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="the openai client is not installed")
def test_a_real_agent_run_against_llmlab_serve(chat_dir):
    """Start `llmlab serve` on 127.0.0.1, drive it with the official client through run_agent."""
    import subprocess
    import sys
    import time

    import openai

    from llmlab.systems.agent import run_agent
    from llmlab.systems.tools import calculator

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmlab",
            "serve",
            "--model",
            str(chat_dir),
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        for _ in range(120):  # wait for the server to come up
            try:
                name = client.models.list().data[0].id
                break
            except openai.APIConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("llmlab serve did not start")
        r = run_agent("What is 2 + 3?", client, [calculator], model_name=name, max_steps=2, max_new_tokens=8)
        assert r.stopped_because in ("final_answer", "max_steps", "stuck") and r.steps
    finally:
        server.terminate()
        server.wait(10)
