"""Tool calls inside one engine request: `generate(..., tools=[...])` runs the tool mid-turn, forces the
result in, and bounds the rounds."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab.errors import UserError
from llmlab.generate import generate
from llmlab.model import ModelConfig, Transformer
from llmlab.systems.engine_tools import LIMIT_REACHED, chat_prompts, tool_callback
from llmlab.systems.tools import calculator

SPECIALS = [
    "<|bos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|tool_call|>",
    "<|/tool_call|>",
    "<|tool_result|>",
    "<|/tool_result|>",
]


class ByteTok:
    """Bytes 0..255, then the chat template's special tokens."""

    def __init__(self):
        self.special_tokens = {s: 256 + i for i, s in enumerate(SPECIALS)}
        self.vocab_size = 256 + len(SPECIALS)

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return self.encode_ordinary(text)

    def decode_bytes(self, ids) -> bytes:
        inv = {v: k for k, v in self.special_tokens.items()}
        return b"".join(inv[i].encode() if i in inv else bytes([i]) for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture
def tok():
    return ByteTok()


def tiny(tok) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=256
    )
    return Transformer(cfg).eval()


def test_generate_runs_the_calculator_mid_turn_and_bounds_the_rounds(tok):
    """The prompt opens a call; a logit bias makes the model close a call at every step (a trained
    model closes it once): the first close runs the calculator, the second hits the limit, after which
    nothing more is forced."""
    sp = tok.special_tokens
    call = json.dumps({"name": "calculator", "arguments": {"expression": "37 * 91 - 12"}})
    prompt = [
        sp["<|user|>"],
        65,
        sp["<|end|>"],
        sp["<|assistant|>"],
        sp["<|tool_call|>"],
        *tok.encode_ordinary(call),
    ]
    text = generate(
        tiny(tok),
        tok,
        prompt,
        max_new_tokens=5,
        temperature=0,
        logit_bias={sp["<|/tool_call|>"]: 100.0},
        stop_token_ids=[],
        tools=[calculator],
        max_tool_rounds=1,
    )
    results = [part.split("<|/tool_result|>")[0] for part in text.split("<|tool_result|>")[1:]]
    assert results == ["3355", LIMIT_REACHED.format(n=1)]
    assert text.endswith("<|assistant|>" + "<|/tool_call|>" * 3)
    assert text.startswith("<|/tool_call|><|end|><|tool|>calculator<|tool_result|>3355")


def test_streaming_with_tools_gives_the_same_text(tok):
    sp = tok.special_tokens
    call = json.dumps({"name": "calculator", "arguments": {"expression": "6 * 7"}})
    prompt = [
        sp["<|user|>"],
        65,
        sp["<|end|>"],
        sp["<|assistant|>"],
        sp["<|tool_call|>"],
        *tok.encode_ordinary(call),
    ]
    kw = dict(
        max_new_tokens=2,
        temperature=0,
        logit_bias={sp["<|/tool_call|>"]: 100.0},
        stop_token_ids=[],
        tools=["calculator"],
        max_tool_rounds=1,
    )
    model = tiny(tok)
    assert "".join(generate(model, tok, prompt, stream=True, **kw)) == generate(model, tok, prompt, **kw)


def test_callback_answers_unknown_tools_and_validates_rounds():
    cb = tool_callback([calculator], max_rounds=3)
    assert cb(0, 0, '{"name": "shell", "arguments": {}}').startswith("error: unknown tool 'shell'")
    assert cb(0, 0, '{"name": "calculator", "arguments": {"expression": 5}}').startswith(
        "error: calculator: argument 'expression' must be a string"
    )
    assert cb(1, 0, '{"name": "calculator", "arguments": {"expression": "1+1"}}') == "2"  # its own count
    assert cb(0, 0, '{"name": calc').startswith("error: malformed tool call: not valid JSON")
    assert cb(0, 0, "{}") == LIMIT_REACHED.format(n=3) and cb(0, 0, "{}") is None
    with pytest.raises(UserError, match="max_tool_rounds must be >= 1"):
        tool_callback([calculator], max_rounds=0)


def test_plain_prompts_become_a_user_turn_with_the_tools():
    class Tok:
        def render_for_generation(self, messages, tools=None):
            return ("rendered", messages[0]["content"], tools[0]["function"]["name"])

    out = chat_prompts(Tok(), ["2+2?", "<|user|>x<|end|><|assistant|>", [1, 2]], [calculator])
    assert out == [("rendered", "2+2?", "calculator"), "<|user|>x<|end|><|assistant|>", [1, 2]]


def test_tools_with_beams_is_a_user_error(tok):
    with pytest.raises(UserError, match="not beams or a draft model"):
        generate(tiny(tok), tok, [1, 2], num_beams=2, tools=[calculator])
