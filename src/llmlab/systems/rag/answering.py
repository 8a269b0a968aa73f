"""Answering: retrieve, put the top chunks into the prompt as numbered sources, generate, check citations.

    answer(model, tok, index, question, k) → Answer(text, citations, invalid_citations, hits)

`hits` are the sources the model was shown, [1] first; the prompt is the chat template's user turn
of `llmlab.systems.rag.prompt.rag_prompt`, within `model.cfg.context - max_new_tokens` tokens (the
lowest-ranked chunks dropped first). Decoding is greedy. `invalid_citations` lists the [n] that
name no source given: such an answer cites something it was not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmlab.systems.rag.prompt import fit_sources, invalid_citations, parse_citations, rag_prompt
from llmlab.systems.rag.retrievers import Hit


@dataclass
class Answer:
    text: str
    citations: list[int]
    invalid_citations: list[int]
    hits: list[Hit] = field(default_factory=list)
    prompt: str = ""


def prompt_ids(
    tok, question: str, hits: Sequence[Hit], budget: int, rotate: int = 0
) -> tuple[list[int], list[Hit], str]:
    """(token ids, the hits that fit, in the order shown, the user message) of the RAG prompt within
    `budget` tokens. The lowest-ranked hits are dropped first; then the ones kept are rotated left by
    `rotate` (an evaluation moves the best hit through every position this way)."""
    from llmlab.tokenizer.chat import render_for_generation

    n = fit_sources(tok, question, [(h.title, h.text) for h in hits], budget)
    r = rotate % n if n else 0
    hits = [*hits[r:n], *hits[:r]]
    text = rag_prompt(question, [(h.title, h.text) for h in hits])
    ids = render_for_generation(tok, [{"role": "user", "content": text}])
    return ids[-budget:], hits, text  # the question alone over budget: keep its end


def answer_many(
    model,
    tok,
    questions: Sequence[str],
    hits: Sequence[Sequence[Hit]],
    max_new_tokens: int = 16,
    rotations: Sequence[int] | None = None,
) -> list[Answer]:
    """Greedy answers to each question given its hits ([] = without retrieval), in one batch;
    question i's hits rotated by rotations[i] (`prompt_ids`)."""
    from llmlab.generate import generate

    max_new_tokens = min(max_new_tokens, model.cfg.context // 2)  # a tiny context keeps half for the prompt
    budget = model.cfg.context - max_new_tokens
    rotations = rotations or [0] * len(questions)
    prompts = [prompt_ids(tok, q, h, budget, r) for q, h, r in zip(questions, hits, rotations)]
    texts = generate(model, tok, [p[0] for p in prompts], max_new_tokens=max_new_tokens, temperature=0)
    out = []
    for text, (_, shown, user) in zip(texts, prompts):
        cited = parse_citations(text)
        out.append(Answer(text.strip(), cited, invalid_citations(cited, len(shown)), shown, user))
    return out


def answer(
    model, tok, index, question: str, k: int = 4, mode: str | None = None, max_new_tokens: int = 16
) -> Answer:
    """Retrieve k chunks for `question` (hybrid when the index has vectors, else BM25) and answer."""
    mode = mode or ("hybrid" if index.has_dense else "bm25")
    return answer_many(model, tok, [question], [index.search(question, k=k, mode=mode)], max_new_tokens)[0]
