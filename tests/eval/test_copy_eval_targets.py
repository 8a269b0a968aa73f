"""The copying eval (eval/copy_eval.py), the agent eval (systems/agent_eval.py) and the targets stage."""

from __future__ import annotations

from types import SimpleNamespace

import llmlab.generate
from llmlab.data import agent_tasks, copying
from llmlab.eval import copy_eval, targets_stage
from llmlab.systems import agent_eval, tools


class StubTok:
    def render_for_generation(self, messages, tools=None):
        return [1] * (30 if tools else 5)


def test_copy_eval_scores_each_kind(monkeypatch):
    gold = {ex.prompt: ex.answer for ex in copying.test_examples()}
    prompts_seen = []

    def fake(model, tok, prompts, **kw):  # right on spell and repeat, wrong on reverse
        prompts_seen.extend(prompts)
        return [a if not a.startswith("REV") else "x" for a in answers]

    tests = [ex for i, ex in enumerate(copying.test_examples()) if i % copying.N_TEST < 4]
    answers = [("REV" if ex.prompt.startswith("Reverse") else "") + ex.answer for ex in tests]
    monkeypatch.setattr(llmlab.generate, "generate", fake)
    r = copy_eval.evaluate_copying(SimpleNamespace(cfg=SimpleNamespace(context=100)), StubTok(), limit=4)
    assert r["n"] == 12 and r["by_kind"] == {"spell": 1.0, "reverse": 0.0, "repeat": 1.0}
    assert abs(r["accuracy"] - 2 / 3) < 1e-9 and all(e["prompt"] in gold for e in r["examples"])
    short = copy_eval.evaluate_copying(SimpleNamespace(cfg=SimpleNamespace(context=20)), StubTok(), limit=4)
    assert short["n"] == 0 and "20-token context" in short["note"]


class StubIndex:
    def as_search_backend(self, mode):
        assert mode == "bm25"
        return lambda query, k: [f"{query}: a passage"]


def test_agent_eval_runs_the_tools_and_resets_the_search_backend(monkeypatch):
    tests = agent_tasks.test_examples()[:4]
    calls = []

    def fake(model, tok, prompts, tools=None, **kw):
        if tools:
            calls.append(tools[0].run({"query": "Kelmar", "k": 1}))  # the backend is wired during the run
            return [
                '<|tool_call|>{"name": "search"}<|/tool_call|><|end|><|tool|>calculator<|tool_result|>'
                f"{ex.answer}<|/tool_result|><|end|><|assistant|>{ex.answer}"
                for ex in tests
            ]
        return ["1900" for _ in prompts]

    monkeypatch.setattr(llmlab.generate, "generate", fake)
    model = SimpleNamespace(cfg=SimpleNamespace(context=512))
    r = agent_eval.evaluate_agent(model, StubTok(), StubIndex(), limit=4)
    assert (r["n"], r["with_tools"], r["without_tools"], r["searched"]) == (4, 1.0, 0.0, 1.0)
    assert calls == ["[1] Kelmar: a passage"]
    assert "no search index" in tools.search.run({"query": "x"})  # reset afterwards
    short = agent_eval.evaluate_agent(
        SimpleNamespace(cfg=SimpleNamespace(context=64)), StubTok(), StubIndex()
    )
    assert short["n"] == 0 and "64-token context" in short["note"]


def test_targets_are_gathered_and_judged():
    results = {
        "tool_eval": {"targets": {"arithmetic_tool": {"without": 0.05, "with": 0.95}}},
        "rag_eval": {
            "targets": {
                "unseen_facts": {"without": 0.0, "with": 0.7, "signals": {"right, citation aside": 0.9}}
            }
        },
        "copy_eval": {"targets": {"copy": {"without": None, "with": 0.6}}},
        "sft": {"val_loss": 1.0},
    }
    t = targets_stage.gather_targets(results)
    assert set(t) == {"arithmetic_tool", "unseen_facts", "copy"}
    assert [targets_stage.met(k, v) for k, v in t.items()] == [True, False, True]
    assert targets_stage.met("arithmetic_tool", {"without": 0.2, "with": 0.95}) is False  # could do it alone
    assert targets_stage.met("agent", {"without": None, "with": None}) is None
    r = targets_stage.run(SimpleNamespace(results=results))
    # a miss names its number, its signals, the phase it needs and where to read
    assert r["summary"] == (
        "2 of 3 targets met; missed unseen_facts 0.70 (right, citation aside 0.90): the grounded "
        "lookup: the fact after the question's name in the source; see docs/rag.md"
    )
    assert r["misses"] == [r["summary"].split("; missed ")[1]]
