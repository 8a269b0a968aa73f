"""The built-in tool-use conversations (data/tool_use.py) and the with/without-tools eval (eval/tool_eval.py)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

import llmlab.generate
from llmlab.data import synthetic, tool_use
from llmlab.eval import tool_eval
from llmlab.systems.calculator import calculate
from llmlab.tokenizer.chat import render_text, segments


def test_answers_are_the_arithmetic_and_the_splits_hold_out_triples():
    train, test = synthetic.examples("tool_use", "train"), synthetic.examples("tool_use", "test")
    assert len(train) >= 150 and len(test) >= 40
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    for ex in train + test:
        expr = tool_use.expression_for(ex)
        nums = [int(n) for n in re.findall(r"\d+", expr)]
        ops = re.findall(r"[*/+-]", expr)
        value = nums[0] * nums[1] if ops[0] == "*" else nums[0] // nums[1]
        if len(ops) == 2:
            value = value + nums[2] if ops[1] == "+" else value - nums[2]
        assert ex.answer == str(value) == calculate(expr)
        assert re.findall(r"\d+", expr) == re.findall(r"\d+", ex.prompt)  # the call reads them in order
        assert not ex.prompt[0].isdigit()  # every operand follows a space: one kind of lookup starts each


def test_a_conversation_renders_as_the_tools_template_and_trains_on_the_call_and_answer():
    conv = synthetic.conversations("tool_use")[0]
    assert render_text(conv) == render_text(conv[1:], tools=[tool_use.SCHEMA])
    trained = "".join(text for text, _, t in segments(conv) if t)
    result = conv[3]["content"]
    assert trained == (
        '<|tool_call|>{"name": "calculator", "arguments": {"expression": "'
        + conv[2]["tool_calls"][0]["arguments"]["expression"]
        + '"}}<|/tool_call|><|end|> '
        + result
        + "<|end|>"
    )
    assert conv[-1]["content"] == result


def test_the_sft_mix_includes_tool_use():
    mix = synthetic.conversations("mix")
    assert sum(c[0]["role"] == "system" and "# Tools" in c[0]["content"] for c in mix) == len(
        synthetic.examples("tool_use", "train")
    )


def test_answer_after_tools():
    transcript = "<|/tool_call|><|end|><|tool|>calculator<|tool_result|>3355<|/tool_result|><|end|><|assistant|>3355<|end|>"
    assert tool_eval.answer_after_tools(transcript) == "3355"
    assert tool_eval.answer_after_tools("42") == "42"
    assert tool_eval.answer_after_tools('<|tool_call|>{"name": "calculator"}<|/tool_call|>') == ""


class StubTok:
    def render_for_generation(self, messages, tools=None):
        return [1] * (20 if tools else 5)


def calculator_call(expression: str) -> str:
    return f"<|tool_call|>{json.dumps({'name': 'calculator', 'arguments': {'expression': expression}})}<|/tool_call|>"


def fake_generate(model, tok, prompts, tools=None, **kw):
    """With tools: a transcript whose answer is right, its call right for every other question;
    without: always wrong."""
    tests = synthetic.examples("tool_use", "test")
    if tools:
        out = []
        for i, (ex, _) in enumerate(zip(tests, prompts)):
            expr = tool_use.expression_for(ex).replace(" ", "") if i % 2 == 0 else "1 + 1"
            call = calculator_call(expr)
            out.append(
                f"{call}<|end|><|tool|>calculator<|tool_result|>{ex.answer}<|/tool_result|><|end|><|assistant|>{ex.answer}"
            )
        return out
    return ["7" for _ in prompts]


def test_evaluate_counts_with_and_without(monkeypatch, tmp_path):
    monkeypatch.setattr(llmlab.generate, "generate", fake_generate)
    model = SimpleNamespace(cfg=SimpleNamespace(context=100))
    r = tool_eval.evaluate_tool_use(model, StubTok(), limit=10)
    assert (r["n"], r["with_tools"], r["without_tools"], r["called"], r["call_right"]) == (
        10,
        1.0,
        0.0,
        1.0,
        0.5,
    )
    ctx = SimpleNamespace(fig_dir=tmp_path)
    blocks = tool_eval.section(r, ctx)
    assert any(getattr(b, "rows", None) == [[10, 1.0, 0.0, 1.0, 0.5]] for b in blocks)
    assert (tmp_path / "tool_use.png").read_bytes().startswith(b"\x89PNG")


def test_first_expression_reads_the_first_call_only():
    t = f"{calculator_call('12 * 3')}<|end|><|tool|>calculator<|tool_result|>36<|/tool_result|><|end|><|assistant|>"
    t += calculator_call("9")
    assert tool_eval.first_expression(t) == "12*3"
    assert tool_eval.first_expression("36") is None
    assert tool_eval.first_expression('<|tool_call|>{"name": "calculator"}<|/tool_call|>') is None


def test_a_context_too_short_for_the_tools_is_a_note_not_a_crash(monkeypatch):
    monkeypatch.setattr(llmlab.generate, "generate", fake_generate)
    r = tool_eval.evaluate_tool_use(SimpleNamespace(cfg=SimpleNamespace(context=40)), StubTok(), limit=5)
    assert r["n"] == 0 and r["with_tools"] is None and "40-token context" in r["note"]


@pytest.mark.parametrize("limit", [3])
def test_evaluate_on_a_real_tiny_model_runs(limit):
    import torch

    from llmlab.model import ModelConfig, Transformer
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train(
        ["What is 12 × 34? 408."] * 5, vocab_size=256 + 12, engine="python", show_progress=False
    )
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=1, d_model=16, n_head=2, n_kv_head=1, d_ff=32, context=512
        )
    )
    r = tool_eval.evaluate_tool_use(model, tok, limit=limit, max_new_tokens=4)
    assert r["n"] == limit and 0.0 <= r["with_tools"] <= 1.0 and 0.0 <= r["without_tools"] <= 1.0


def test_headline_says_what_was_measured():
    assert tool_eval.headline({"with_tools": 0.25, "without_tools": 0.0}, {})[0][0] == (
        "tool-use accuracy with the calculator"
    )
    assert tool_eval.headline({"note": "too short"}, {}) == [["tool-use accuracy", "-", "too short"]]
