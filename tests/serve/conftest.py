"""A real uvicorn server on 127.0.0.1 (a free port, in a thread) serving a tiny model made here.

The model is a random tiny Transformer with one scripted reply laid over it (`ScriptedLM`): for the
conversation `TOOL_MESSAGES` + `TOOLS` its greedy reply is a well-formed tool call (`auto`), and with
the named tool choice it completes the forced call's arguments. Everything else is the random model.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the [serve] extra (fastapi, uvicorn) is not installed")

from llmlab.model import ModelConfig, Transformer  # noqa: E402
from llmlab.serve import create_app  # noqa: E402
from llmlab.tokenizer import Tokenizer  # noqa: E402

MODEL = "tiny"
KEY = "sk-test-key"
TEXT = "The king of the night is fair. The queen of the day is sad. Oslo is cold, Rome is warm.\n" * 4
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]
CALL = '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Oslo"}}<|/tool_call|>'
ARGS = '{"city": "Oslo"}}<|/tool_call|>'  # what follows the forced prefix of a named choice


class ScriptedLM(Transformer):
    """A Transformer whose logits get +100 on `script[(position, token)]`: stateless, so any batch,
    cache or abort behaves as for the real model; only the listed (position, token) pairs change."""

    script: dict[tuple[int, int], int]
    gate: threading.Event | None = None  # when set up: every forward waits for it (to hold rows busy)

    def forward(self, ids, positions=None, attn_mask=None, cache=None, cache_pos=0, last_only=False):
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        logits = super().forward(ids, positions, attn_mask, cache, cache_pos, last_only)
        B, T = ids.shape
        if positions is None:
            positions = cache_pos + torch.arange(T, device=ids.device)
        positions = positions if positions.dim() == 2 else positions[None].expand(B, T)
        first = T - logits.shape[1]  # last_only: the logits are for the last position alone
        for b in range(B):
            for t in range(first, T):
                nxt = self.script.get((int(positions[b, t]), int(ids[b, t])))
                if nxt is not None:
                    logits[b, t - first, nxt] += 100.0
        return logits


def _script(tok, prompt: list[int], reply: list[int]) -> dict:
    """(position, token) → next token, so that after `prompt` the greedy reply is `reply` then <|end|>."""
    seq = prompt + reply + [tok.special_tokens["<|end|>"]]
    return {(p, seq[p]): seq[p + 1] for p in range(len(prompt) - 1, len(seq) - 1)}


@pytest.fixture(scope="session")
def tok():
    return Tokenizer.train([TEXT], 300, show_progress=False)


@pytest.fixture(scope="session")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64, context=512
    )
    m = ScriptedLM(cfg).eval()
    auto = tok.render_for_generation(TOOL_MESSAGES, tools=TOOLS)
    named = [*auto, tok.special_tokens["<|tool_call|>"]]
    named += tok.encode_ordinary('{"name": "get_weather", "arguments": ')
    m.script = {
        **_script(tok, auto, tok.encode(CALL, allowed_special="all")),
        **_script(tok, named, tok.encode(ARGS, allowed_special="all")),
    }
    return m


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, wait_ready: bool = True):
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields its base URL; stops it after."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started or (wait_ready and not app.state.server.loop.ready.is_set()):
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def base_url(model, tok):
    """The open server (no key), 8 rows."""
    with running(create_app(model, tok, model_name=MODEL, max_batch=8)) as url:
        yield url


@pytest.fixture(scope="session")
def keyed(model, tok):
    """A server with an API key, 2 rows, no waiting room (a 3rd concurrent request is a 429), at most
    4 messages; its own copy of the model has a gate (open unless a test closes it)."""
    gated = copy.deepcopy(model)
    gated.gate = threading.Event()
    gated.gate.set()
    app = create_app(gated, tok, model_name=MODEL, api_key=KEY, max_batch=2, max_waiting=0, max_messages=4)
    with running(app) as url:
        yield SimpleNamespace(url=url, app=app, gate=gated.gate)


@pytest.fixture(scope="session")
def keyed_url(keyed):
    return keyed.url
