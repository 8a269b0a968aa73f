"""The midtraining mix: many generated conversations in the chat template, each on new content.

nanochat's step between pretraining and SFT. The base model has read prose; it has never seen a
special token, a tool call or a numbered source, and it cannot copy from its prompt. Midtraining
teaches the formats and the copying on fresh content, so nothing can be memorised:

    tool_use   a calculator call on a new operand triple (`data.tool_use`)
    grounded   a question about a new invented entity, its document among 0-2 distractors (`data.grounded`)
    copying    spell / reverse / repeat invented words (`data.copying`)
    agent      search for a new town, then compute with its year (`data.agent_tasks`)

`conversations(n, seed, weights)` draws n of them, the families in proportion to `weights`. No
held-out item of any evaluation occurs in them (`heldout_items` lists those items, and the tests
check every training set against it). The loss is SFT's (assistant tokens only): in the calibration
runs (../shared/notes/copying-calibration.md) content lookup formed only once the loss counted the
answer alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from llmlab.data import agent_tasks, copying, grounded, tool_use
from llmlab.errors import UserError

FAMILIES = ("tool_use", "grounded", "copying", "agent")
DEFAULT_WEIGHTS = {"tool_use": 1.0, "grounded": 1.0, "copying": 1.0, "agent": 1.0}
ENTITY_POOL = 400  # entities alive at a time: distractors come from the same pool


def conversations(
    n: int,
    seed: int = 0,
    weights: dict[str, float] | None = None,
    questions: int = 1,
    copy_tasks: int = 0,
    grounded_questions: int = 0,
) -> list[list[dict]]:
    """`n` midtraining conversations, deterministic in (n, seed, weights and the counts); a tool-use
    conversation asks `questions` questions in turn, a copying one `copy_tasks` and a grounded one
    `grounded_questions` (0: `questions`)."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(FAMILIES))
    if unknown:
        raise UserError(f"midtrain.weights: unknown family {unknown[0]!r}; use {', '.join(FAMILIES)}")
    if n < 1 or sum(weights.values()) <= 0:
        raise UserError("midtrain: need at least one conversation and a positive weight")
    rng = random.Random(f"midtrain-{seed}")
    if questions < 1 or copy_tasks < 0 or grounded_questions < 0:
        raise UserError(
            "midtrain.questions must be >= 1, copy_tasks and grounded_questions >= 0, "
            f"got {questions}, {copy_tasks}, {grounded_questions}"
        )
    makers = _makers(rng, questions, copy_tasks or questions, grounded_questions or questions)
    names = [f for f in FAMILIES if weights.get(f, 0) > 0]
    picks = rng.choices(names, [weights[f] for f in names], k=n)
    return [makers[f]() for f in picks]


def _makers(
    rng: random.Random, questions: int = 1, copy_tasks: int = 1, grounded_questions: int = 1
) -> dict[str, Callable[[], list[dict]]]:
    pairs = tool_use.heldout_pairs()
    reserved = _reserved_numbers()
    pool: list[grounded.Entity] = []

    def entity_pool() -> list[grounded.Entity]:
        if not pool or rng.random() < 0.005:  # renew the pool now and then: new names keep coming
            pool[:] = grounded.fresh_entities(rng, ENTITY_POOL, set())
        return pool

    def agent() -> list[dict]:
        towns = [e for e in entity_pool() if e.doc_id.startswith("towns/")]
        return agent_tasks.conversation(rng.choice(towns), rng)

    return {
        "tool_use": lambda: tool_use.fresh_conversation(rng, pairs, reserved, questions),
        "grounded": lambda: grounded.grounded_conversation(rng, entity_pool(), questions=grounded_questions),
        "copying": lambda: copying.fresh_conversation(rng, copy_tasks),
        "agent": agent,
    }


def _reserved_numbers() -> set[str]:
    from llmlab.data.synthetic import examples

    return {ex.answer for ex in examples("largest", "test")}


def heldout_items() -> dict[str, set]:
    """What the held-out evaluations ask about, by kind: operand pairs, invented names, invented words."""
    return {
        "operand_pairs": tool_use.heldout_pairs(),
        "names": grounded.heldout_names(),
        "words": set(copying.HELDOUT),
    }


def sample_text(n: int = 2000, seed: int = 0) -> list[str]:
    """Plain text of `n` midtraining conversations (contents, tool schemas and calls as JSON), for a
    tokenizer to learn the formats' pieces from."""
    from llmlab.tokenizer.chat import tool_call_json

    out = []
    for conv in conversations(n, seed):
        parts = [m["content"] for m in conv]
        parts += [tool_call_json(c) for m in conv for c in m.get("tool_calls", [])]
        out.append("\n".join(p for p in parts if p))
    return out
