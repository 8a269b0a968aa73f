"""Grounded QA: invented entities, train and held-out disjoint, answers copied from the cited source."""

from __future__ import annotations

import re

from llmlab.data import grounded, synthetic
from llmlab.data.chat import load_conversations
from llmlab.systems.rag.prompt import parse_citations, strip_citations


def names(split: str) -> set[str]:
    """Every generated name of a split: entity titles and their name-valued answers."""
    out = {e.title for e in grounded.entities(split)}
    for e in grounded.entities(split):
        out |= {f.answer for f in e.facts if f.answer[0].isupper()}
    return out


def test_train_and_heldout_share_no_generated_name():
    train, test = names("train"), names("test")
    assert len(test) >= 40 and not train & test
    assert not {d["id"] for d in grounded.documents("train")} & {d["id"] for d in grounded.documents("test")}


def test_every_answer_is_in_its_relevant_document():
    docs = {d["id"]: d for d in grounded.documents("test") + grounded.documents("train")}
    for split in ("train", "test"):
        rows = grounded.qa(split)
        assert len(rows) >= 100 if split == "train" else len(rows) >= 50
        for q in rows:
            (rel,) = q["relevant"]
            assert q["answers"][0] in docs[rel]["text"], q


def test_sft_examples_cite_the_source_holding_the_answer():
    for split in ("train", "test"):
        for ex in synthetic.examples("grounded", split):
            (n,) = parse_citations(ex.answer)
            sources = [line for line in ex.prompt.splitlines() if re.match(r"\[\d+\] ", line)]
            assert strip_citations(ex.answer) in sources[n - 1]
            assert ex.answer in ex.choices
            assert not re.search(r"(?<!\d)\d\d(?!\d)", ex.prompt + ex.answer)  # clear of `largest`'s numbers


def test_a_builtin_sft_task_and_part_of_the_mix():
    convs = load_conversations("builtin:grounded")
    assert len(convs) == len(synthetic.examples("grounded", "train"))
    mix = {c[0]["content"] for c in synthetic.conversations("mix")}
    assert {ex.prompt for ex in synthetic.examples("grounded", "train")} <= mix
