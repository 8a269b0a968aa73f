"""The agent loop with scripted fake models (fixed replies), one test per stop reason, and its trace."""

from __future__ import annotations

import itertools
import json

import pytest

from llmlab.errors import UserError
from llmlab.systems.agent import FORCE_FINAL, parse_react, run_agent
from llmlab.systems.tools import calculator, tool


def call(expr: str, cid: str = "c0") -> dict:
    return {
        "tool_calls": [{"id": cid, "function": {"name": "calculator", "arguments": {"expression": expr}}}]
    }


def scripted(*replies):
    """A fake model: the replies in order (the last repeats), recording what it was sent."""
    seen = []
    it = iter(replies)
    last = [None]

    def model(messages, tools):
        seen.append((list(messages), tools))
        last[0] = next(it, last[0])
        return last[0]

    model.seen = seen
    return model


def test_final_answer_after_a_tool_call(tmp_path):
    m = scripted(call("37 * 91 - 12"), {"content": "3355"})
    trace = tmp_path / "trace.jsonl"
    r = run_agent("What is 37 * 91 - 12?", m, tools=[calculator], trace=trace)
    assert (r.answer, r.stopped_because, len(r.steps)) == ("3355", "final_answer", 2)
    assert r.steps[0].calls[0].result == "3355"
    second_messages, tools = m.seen[1]
    assert second_messages[-1] == {
        "role": "tool",
        "tool_call_id": "c0",
        "name": "calculator",
        "content": "3355",
    }
    assert tools == [calculator.schema]
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [x["type"] for x in records] == ["start", "step", "step", "end"]
    assert records[1]["calls"][0]["arguments"] == '{"expression": "37 * 91 - 12"}'
    assert records[-1]["stopped_because"] == "final_answer" and records[-1]["answer"] == "3355"


def test_our_models_text_with_tool_call_tokens_is_parsed():
    m = scripted(
        '<|tool_call|>{"name": "calculator", "arguments": {"expression": "6*7"}}<|/tool_call|>', "42"
    )
    r = run_agent("6*7?", m, tools=["calculator"])
    assert (r.answer, r.steps[0].calls[0].result) == ("42", "42")


def test_max_steps_asks_for_one_forced_final_answer():
    counter = itertools.count()
    m = scripted(*[call(f"{next(counter)} + 1") for _ in range(3)], {"content": "gave up: 3"})
    r = run_agent("count", m, tools=[calculator], max_steps=3)
    assert (r.stopped_because, r.answer, len(r.steps)) == ("max_steps", "gave up: 3", 4)
    forced_messages, forced_tools = m.seen[-1]
    assert forced_messages[-1] == {"role": "user", "content": FORCE_FINAL} and forced_tools is None


def test_timeout_stops_between_steps():
    now = [0.0]
    inner = scripted(call("1 + 1"), call("2 + 2"), call("3 + 3"))

    def slow_model(messages, tools):  # each model call takes 0.6 "seconds" of the fake clock
        now[0] += 0.6
        return inner(messages, tools)

    r = run_agent("t", slow_model, tools=[calculator], max_wall_s=1.0, clock=lambda: now[0])
    assert r.stopped_because == "timeout" and r.answer is None and len(r.steps) == 2


def test_the_same_call_and_result_three_times_is_stuck():
    m = scripted(call("1 + 1", "a"), call("1 + 1", "b"), call("1 + 1", "c"), {"content": "never"})
    r = run_agent("t", m, tools=[calculator], max_steps=8)
    assert r.stopped_because == "stuck" and len(r.steps) == 3 and r.answer is None


def test_an_a_b_a_b_oscillation_is_stuck():
    m = scripted(call("1 + 1"), call("2 + 2"), call("1 + 1"), call("2 + 2"), {"content": "never"})
    r = run_agent("t", m, tools=[calculator], max_steps=8)
    assert r.stopped_because == "stuck" and len(r.steps) == 4


def test_the_token_budget_stops_the_run():
    m = scripted({**call("1 + 1"), "tokens": 60}, {**call("2 + 2"), "tokens": 60}, {"content": "x"})
    r = run_agent("t", m, tools=[calculator], max_tokens=100)
    assert (r.stopped_because, r.tokens, len(r.steps)) == ("max_tokens", 120, 2)


def test_tool_errors_are_observations_not_exceptions():
    @tool
    def broken(x: int) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    m = scripted(
        {"tool_calls": [{"id": "1", "function": {"name": "broken", "arguments": {"x": "one"}}}]},
        {"tool_calls": [{"id": "2", "function": {"name": "broken", "arguments": {"x": 1}}}]},
        {"tool_calls": [{"id": "3", "function": {"name": "nope", "arguments": {}}}]},
        {"tool_calls": [{"id": "4", "function": {"name": "broken", "arguments": "{not json"}}]},
        '<|tool_call|>{"name": oops}<|/tool_call|>',
        {"content": "sorry"},
    )
    r = run_agent("t", m, tools=[broken], max_steps=8)
    results = [s.calls[0].result for s in r.steps[:5]]
    assert results[0] == "error: broken: argument 'x' must be an integer, got 'one'"
    assert results[1] == "error: RuntimeError: disk on fire"
    assert results[2].startswith("error: unknown tool 'nope'")
    assert results[3].startswith("error: the arguments are not valid JSON")
    assert "not valid JSON" in results[4] and r.messages[-2]["role"] == "user"
    assert r.answer == "sorry"


def test_parallel_calls_each_get_a_result_with_their_id():
    m = scripted(
        {
            "tool_calls": [
                {"id": "x", "function": {"name": "calculator", "arguments": {"expression": "2*3"}}},
                {"id": "y", "function": {"name": "calculator", "arguments": {"expression": "4*5"}}},
            ]
        },
        {"content": "6 and 20"},
    )
    r = run_agent("t", m, tools=[calculator])
    tool_msgs = [msg for msg in r.messages if msg["role"] == "tool"]
    assert [(t["tool_call_id"], t["content"]) for t in tool_msgs] == [("x", "6"), ("y", "20")]


def test_react_mode_parses_actions_and_final_answers():
    m = scripted(
        'Thought: multiply\nAction: calculator\nAction Input: {"expression": "37 * 91"}',
        "Thought: done\nFinal Answer: 3367",
    )
    r = run_agent("37*91?", m, tools=[calculator], mode="react")
    assert (r.answer, r.stopped_because) == ("3367", "final_answer")
    sent, tools = m.seen[1]
    assert tools is None and "calculator" in sent[0]["content"] and sent[-1]["content"] == "Observation: 3367"


def test_parse_react_without_action_or_answer_is_plain_content():
    assert parse_react("just text").content == "just text" and not parse_react("just text").tool_calls


def test_on_step_sees_every_step():
    seen = []
    run_agent("t", scripted(call("1+1"), {"content": "2"}), tools=[calculator], on_step=seen.append)
    assert [s.final for s in seen] == [False, True]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_steps": 0}, "max_steps must be an integer >= 1, got 0"),
        ({"max_wall_s": 0}, "max_wall_s must be > 0"),
        ({"mode": "plan"}, "unknown agent mode 'plan'"),
        ({"tools": ["shell"]}, "unknown tool 'shell'"),
    ],
)
def test_bad_settings_are_user_errors(kw, message):
    with pytest.raises(UserError, match=message):
        run_agent("t", scripted({"content": "x"}), **kw)


def test_an_openai_client_needs_a_model_name():
    class Client:
        class chat:
            completions = None

    with pytest.raises(UserError, match="needs the model's name"):
        run_agent("t", Client())
