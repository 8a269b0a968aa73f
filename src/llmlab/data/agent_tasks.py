"""The two-step agent task: look a fact up with `search`, then compute with it on the `calculator`.

    What year was 40 years after Kelmar was founded?
    → search {"query": "Kelmar", "k": 1}      → "[1] Kelmar: Kelmar is a town ... founded by ... in 1742. ..."
    → calculator {"expression": "40 + 1742"}  → "1782"
    → 1782

Neither step alone answers it: the year is in no training text (the town is invented and held out)
and the sum needs the year. Training conversations use fresh invented towns (`grounded.fresh_entities`);
the test questions ask about the held-out towns of `llmlab.data.grounded`, whose documents are in the
RAG index that `search` reads.
"""

from __future__ import annotations

import random

from llmlab.data.grounded import Entity, entities
from llmlab.data.synthetic import Example
from llmlab.systems.calculator import calculate
from llmlab.systems.tools import calculator, search
from llmlab.tokenizer.chat import tool_block

TOOLS = [search, calculator]
SCHEMAS = [t.schema for t in TOOLS]
PER_TOWN = 3
SEARCH_K = 1  # one passage: the whole transcript must fit a small model's context


def _year(e: Entity) -> str:
    return next(f.answer for f in e.facts if f.question.startswith("In which year"))


def _question(e: Entity, rng: random.Random) -> tuple[str, str]:
    year = _year(e)
    if rng.random() < 0.5:
        d = rng.randint(2, 99)
        return f"What year was {d} years after {e.title} was founded?", f"{d} + {year}"
    y = rng.randint(1900, 2025)
    return f"How many years passed from the founding of {e.title} to {y}?", f"{y} - {year}"


def passage(e: Entity) -> str:
    """What `search` returns for the entity's document (`Index.as_search_backend`'s layout)."""
    return f"[1] {e.title}: {e.text}"


def conversation(e: Entity, rng: random.Random) -> list[dict]:
    """The whole agent transcript for a question about town `e`: both calls, both results, the answer."""
    question, expression = _question(e, rng)
    answer = calculate(expression)
    return [
        {"role": "system", "content": tool_block(SCHEMAS)},
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("search", {"query": e.title, "k": SEARCH_K})],
        },
        {"role": "tool", "name": "search", "content": passage(e)},
        {"role": "assistant", "content": "", "tool_calls": [_call("calculator", {"expression": expression})]},
        {"role": "tool", "name": "calculator", "content": answer},
        {"role": "assistant", "content": answer},
    ]


def _call(name: str, arguments: dict) -> dict:
    return {"name": name, "arguments": arguments}


def test_examples() -> list[Example]:
    """`PER_TOWN` questions about each held-out town; the answer is the calculator's result."""
    rng = random.Random("agent-test")
    out: dict[str, Example] = {}
    for e in entities("test"):
        while e.doc_id.startswith("towns/") and sum(e.title in q for q in out) < PER_TOWN:
            question, expression = _question(e, rng)
            out.setdefault(question, Example(question, calculate(expression)))
    return list(out.values())
