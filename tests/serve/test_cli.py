"""`llmlab serve`: bad input is one line and exit 2; a real process serves a saved model directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmlab.cli import main
from llmlab.cli.serve import bind_warning
from llmlab.model.load import save_model_dir

from .conftest import KEY, free_port

SRC = Path(__file__).resolve().parents[2] / "src"


def test_bad_model_dir_is_exit_2(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "not a model directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "key", "warns"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
        ("0.0.0.0", "k", False),
    ],
)
def test_binding_beyond_loopback_without_a_key_warns(host, key, warns):
    assert (bind_warning(host, key) is not None) == warns


@pytest.mark.slow  # a fresh process imports torch and FastAPI: ~10-20 s on 2 busy cores
def test_llmlab_serve_serves_a_model_directory(tmp_path, model, tok):
    save_model_dir(tmp_path / "tiny-sft", model, tok)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "LLMLAB_API_KEY": KEY}
    cmd = [
        sys.executable,
        "-m",
        "llmlab",
        "serve",
        "--model",
        str(tmp_path / "tiny-sft"),
        "--port",
        str(port),
        "--max-batch",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "llmlab serve never became healthy"
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {KEY}"}  # the key came from $LLMLAB_API_KEY
        body = {"model": "tiny-sft", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
        r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200 and r.json()["model"] == "tiny-sft"
        assert "llmlab chat" in httpx.get(url + "/").text
    finally:
        proc.terminate()
        proc.wait(30)
