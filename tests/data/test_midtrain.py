"""The midtraining mix (data/midtrain.py) and its families: copying, agent transcripts, fresh entities."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from llmlab.config import load_recipe
from llmlab.data import agent_tasks, copying, grounded, midtrain
from llmlab.data.chat import load_conversations
from llmlab.errors import UserError
from llmlab.systems.calculator import calculate
from llmlab.tokenizer.chat import segments


def family(conv: list[dict]) -> str:
    if conv[0]["role"] == "system":
        return "agent" if '"search"' in conv[0]["content"] else "tool_use"
    return "grounded" if conv[0]["content"].startswith("Answer from the sources") else "copying"


def test_conversations_are_deterministic_and_follow_the_weights():
    a = midtrain.conversations(400, seed=3, weights={"tool_use": 3, "copying": 1})
    assert a == midtrain.conversations(400, seed=3, weights={"tool_use": 3, "copying": 1})
    assert a != midtrain.conversations(400, seed=4, weights={"tool_use": 3, "copying": 1})
    counts = Counter(map(family, a))
    assert set(counts) == {"tool_use", "copying"} and 2.4 < counts["tool_use"] / counts["copying"] < 3.8


def test_every_family_trains_on_the_assistant_only():
    for conv in midtrain.conversations(60, seed=0):
        trained = "".join(text for text, _, t in segments(conv) if t)
        assert conv[-1]["content"] + "<|end|>" in trained
        assert not any(m["content"] in trained for m in conv if m["role"] == "user")
        assert "<|tool_result|>" not in trained and "<|user|>" not in trained


def test_bad_weights_are_one_clear_error():
    with pytest.raises(UserError, match="unknown family 'poetry'"):
        midtrain.conversations(5, weights={"poetry": 1.0})
    with pytest.raises(UserError, match="positive weight"):
        midtrain.conversations(5, weights={"copying": 0.0})


def test_builtin_midtrain_reads_the_recipe_section():
    rec = load_recipe(None, ["midtrain.conversations=30", "midtrain.grounded=0", "midtrain.agent=0"])
    convs = load_conversations("builtin:midtrain", seed=1, midtrain=rec.midtrain)
    assert len(convs) == 30 and {family(c.messages) for c in convs} <= {"tool_use", "copying"}


def test_questions_ask_several_questions_after_one_schema():
    rec = load_recipe(
        None,
        ["midtrain.conversations=6", "midtrain.questions=3"]
        + [f"midtrain.{f}=0" for f in ("grounded", "copying", "agent")],
    )
    convs = load_conversations("builtin:midtrain", seed=2, midtrain=rec.midtrain)
    for c in convs:
        roles = [m["role"] for m in c.messages]
        assert roles == ["system"] + ["user", "assistant", "tool", "assistant"] * 3
        for call, result, answer in zip(c.messages[2::4], c.messages[3::4], c.messages[4::4]):
            expression = call["tool_calls"][0]["arguments"]["expression"]
            assert result["content"] == answer["content"] == calculate(expression)
    with pytest.raises(UserError, match="questions"):
        midtrain.conversations(5, questions=0)


def test_grounded_questions_each_look_up_the_cited_source():
    weights = {"grounded": 1.0, "tool_use": 0.0, "copying": 0.0, "agent": 0.0}
    for conv in midtrain.conversations(40, seed=5, weights=weights, questions=4):
        assert [m["role"] for m in conv] == ["user", "assistant"] * 4
        lines = conv[0]["content"].split("\n")
        sources = {int(line[1]): line for line in lines if re.match(r"\[\d\] ", line)}
        assert 1 <= len(sources) <= 3 and lines[-1].startswith("Question: ")
        for user, answer in zip(conv[0::2], conv[1::2]):
            question = user["content"].split("\n")[-1].removeprefix("Question: ")
            title, n, fact = re.fullmatch(r"(.+) \[(\d)\]: (.+)", answer["content"]).groups()
            assert sources[int(n)].startswith(f"[{n}] {title} [{n}]: ")  # the title, then its number
            assert title in question and fact in sources[int(n)]


def test_copying_answers_are_the_words_spelled_reversed_repeated():
    for ex in copying.test_examples():
        word = re.search(r"(?:word|letters) ([a-z ]+?)(?:\.| \d)", ex.prompt).group(1)
        letters = word.replace(" ", "")
        if ex.prompt.startswith("Spell"):
            assert ex.answer == " ".join(letters)
        elif ex.prompt.startswith("Reverse"):
            assert ex.answer == " ".join(letters[::-1])
        else:
            n = int(re.search(r"(\d+) times", ex.prompt).group(1))
            assert ex.answer == " ".join([letters] * n)
    assert len({ex.prompt for ex in copying.test_examples()}) == copying.N_TEST * len(copying.KINDS)


def _copy_answer(user: str) -> str:
    """The right answer to a training copy task, worked out from its question alone."""
    if m := re.fullmatch(r"Spell the word (\w+)\.", user):
        return " ".join(m.group(1))
    if m := re.fullmatch(r"Reverse the letters ([a-z ]+)\.", user):
        return " ".join(m.group(1).split()[::-1])
    m = re.fullmatch(r"Repeat the word (\w+) (\d) times\.", user)
    assert m, user
    return " ".join([m.group(1)] * int(m.group(2)))


def test_a_copying_conversation_asks_tasks_turns_each_answered_by_a_copy():
    rng = random.Random(5)
    kinds = Counter()
    for _ in range(200):
        conv = copying.fresh_conversation(rng, tasks=5)
        assert [m["role"] for m in conv] == ["user", "assistant"] * 5
        for user, answer in zip(conv[::2], conv[1::2]):
            assert answer["content"] == _copy_answer(user["content"])
            kinds[user["content"].split()[0]] += 1
    assert set(kinds) == {"Spell", "Reverse", "Repeat"}
    weights = dict(zip(("Spell", "Reverse", "Repeat"), copying.TRAIN_WEIGHTS))
    for k, w in weights.items():  # 1,000 draws: within ±0.05 of each kind's share
        assert abs(kinds[k] / 1000 - w / sum(weights.values())) < 0.05, (k, kinds)


def test_copy_tasks_and_grounded_questions_set_the_turns_of_their_family_alone():
    weights = {"tool_use": 1.0, "grounded": 1.0, "copying": 1.0, "agent": 0.0}
    convs = midtrain.conversations(
        60, seed=1, weights=weights, questions=3, copy_tasks=10, grounded_questions=7
    )
    turns = {family(c): set() for c in convs}
    for c in convs:
        turns[family(c)].add(sum(m["role"] == "user" for m in c))
    assert turns == {"copying": {10}, "grounded": {7}, "tool_use": {3}}
    same = midtrain.conversations(60, seed=1, weights=weights, questions=3)
    assert {sum(m["role"] == "user" for m in c) for c in same if family(c) != "tool_use"} == {3}
    with pytest.raises(UserError, match="copy_tasks and grounded_questions >= 0"):
        midtrain.conversations(4, copy_tasks=-1)
    with pytest.raises(UserError, match="copy_tasks and grounded_questions >= 0"):
        midtrain.conversations(4, grounded_questions=-1)


def test_an_agent_transcript_computes_with_the_year_it_found():
    rng = random.Random(0)
    towns = [e for e in grounded.fresh_entities(rng, 20, set()) if e.doc_id.startswith("towns/")]
    for e in towns:
        conv = agent_tasks.conversation(e, rng)
        year = re.search(r"in (\d{4})\.", conv[3]["content"]).group(1)
        expr = conv[4]["tool_calls"][0]["arguments"]["expression"]
        assert year in expr and conv[5]["content"] == conv[6]["content"] == calculate(expr)
        asked = re.findall(r"\d+", conv[1]["content"])  # the question's number first, then the found year
        assert re.findall(r"\d+", expr) == [*asked, year]
        assert conv[2]["tool_calls"][0]["arguments"] == {"query": e.title, "k": agent_tasks.SEARCH_K}


def test_agent_test_questions_ask_about_held_out_towns():
    tests = agent_tasks.test_examples()
    towns = {e.title for e in grounded.entities("test") if e.doc_id.startswith("towns/")}
    assert len(tests) == agent_tasks.PER_TOWN * len(towns)
    assert all(any(t in ex.prompt for t in towns) for ex in tests)


def test_fresh_entities_use_no_held_out_name():
    banned = grounded.heldout_names()
    ents = grounded.fresh_entities(random.Random(1), 300, set())
    used = {e.title for e in ents} | {f.answer for e in ents for f in e.facts}
    assert not used & banned and len({e.title for e in ents}) > 250


def test_the_generated_copying_corpus_is_a_source_keyed_by_its_version(monkeypatch):
    from llmlab.data import corpus, shards

    docs = corpus.load_documents(["copying"])
    assert len(docs) == 1200 and docs[:3] == corpus.load_documents("copying")[:3]
    repeats = [line for line in docs[0].splitlines() if re.fullmatch(r"[a-z ]+\.( [a-z ]+\.)+", line)]
    assert len(repeats) > 10 and all(len(set(line.rstrip(".").split(". "))) == 1 for line in repeats)
    key = shards.cache_key("tok", "copying", 0.05)
    monkeypatch.setattr(corpus._generated_copying, "version", 99)
    assert shards.cache_key("tok", "copying", 0.05) != key  # a new generator makes new shards
