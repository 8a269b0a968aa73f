"""`llmlab rag eval`: retrieval metrics per mode, and answer accuracy with and without retrieval.

A QA file has one `{"question": str, "answers": [str, ...], "relevant": [doc id, ...]}` per line
(`answers` may be left out for retrieval only, `relevant` for answers only; `relevant` may also be
`{doc id: gain}` for graded nDCG). Retrieval is scored on
the ranking of documents (each chunk's doc id, first occurrence), answers by SQuAD exact match and
token F1 after stripping the [n] markers, and citations by precision and recall against the sources
shown (`llmlab.eval.retrieval`).
"""

from __future__ import annotations

import os

from llmlab.errors import UserError
from llmlab.eval.retrieval import (
    citation_scores,
    exact_match,
    mrr,
    ndcg_at_k,
    recall_at_k,
    supporting_sources,
    token_f1,
)
from llmlab.io import read_jsonl
from llmlab.systems.rag.prompt import strip_citations

RECALL_KS = (1, 5, 10)
MISSES = 8  # wrong answers kept for the report: which relation or entity fails is read from them


def read_qa(path: str | os.PathLike) -> list[dict]:
    """The QA lines of a JSONL file; a bad line is an error naming file:line."""
    rows = []
    for where, obj in read_jsonl(path, "QA file (--qa)"):
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("question"), str)
            or not obj["question"].strip()
        ):
            raise UserError(f"{where}: a QA line needs a string 'question'")
        answers, relevant = obj.setdefault("answers", []), obj.setdefault("relevant", [])
        if not (isinstance(answers, list) and all(isinstance(x, str) for x in answers)):
            raise UserError(f"{where}: 'answers' must be a list of strings, got {answers!r}")
        graded = isinstance(relevant, dict) and all(
            isinstance(g, int | float) and not isinstance(g, bool) for g in relevant.values()
        )
        if not (graded or (isinstance(relevant, list) and all(isinstance(x, str) for x in relevant))):
            raise UserError(
                f"{where}: 'relevant' must be a list of doc ids or {{doc id: gain}}, got {relevant!r}"
            )
        rows.append(obj)
    if not rows:
        raise UserError(f"--qa {path}: no QA lines")
    return rows


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def retrieval_metrics(index, qa: list[dict], mode: str, depth: int = 10) -> dict:
    """Mean recall@1/5/10, MRR@10 and nDCG@10 over the questions with relevant ids (gains: 1 each for
    a list, graded for a {doc id: gain} mapping; recall and MRR count every id listed as relevant)."""
    rows = [q for q in qa if q["relevant"]]
    per: dict[str, list[float]] = {f"recall@{k}": [] for k in RECALL_KS} | {"mrr@10": [], "ndcg@10": []}
    vectors = index.embed_queries([q["question"] for q in rows]) if mode != "bm25" else [None] * len(rows)
    for q, v in zip(rows, vectors):
        ranked = [h.doc_id for h in index.search(q["question"], k=max(depth, 30), mode=mode, vector=v)]
        for k in RECALL_KS:
            per[f"recall@{k}"].append(recall_at_k(ranked, q["relevant"], k))
        per["mrr@10"].append(mrr(ranked, q["relevant"], 10))
        rel = q["relevant"]
        per["ndcg@10"].append(ndcg_at_k(ranked, rel if isinstance(rel, dict) else dict.fromkeys(rel, 1), 10))
    return {"queries": len(rows), **{m: _mean(v) for m, v in per.items()}}


def score_answers(answers, qa: list[dict]) -> dict:
    """Mean EM, F1, citation precision/recall, the share of answers citing a source not given,
    grounded EM (an exact answer that cites a source holding it; without sources none is grounded)
    and cited_correctly: the share of all answers that cite a source holding the answer, whatever
    the answer's text (so one lucky exact answer cannot make it 100%)."""
    em, f1, prec, rec, bad, grounded, cited = [], [], [], [], [], [], []
    for a, q in zip(answers, qa):
        text = strip_citations(a.text)
        em.append(exact_match(text, q["answers"]))
        holders = supporting_sources([h.text for h in a.hits], q["answers"])
        cited.append(float(bool(holders & set(a.citations))))
        grounded.append(float(em[-1] > 0 and cited[-1] > 0))
        f1.append(token_f1(text, q["answers"]))
        bad.append(float(bool(a.invalid_citations)))
        if a.hits:
            c = citation_scores(a.citations, [h.text for h in a.hits], q["answers"])
            prec += [c["precision"]] if c["precision"] is not None else []
            rec += [c["recall"]] if c["recall"] is not None else []
    return {
        "questions": len(em),
        "exact_match": _mean(em),
        "f1": _mean(f1),
        "citation_precision": _mean(prec),
        "citation_recall": _mean(rec),
        "invalid_citation_rate": _mean(bad),
        "grounded_exact_match": _mean(grounded),
        "cited_correctly": _mean(cited),
    }


def answer_metrics(
    model,
    tok,
    index,
    qa: list[dict],
    mode: str,
    k: int = 3,
    limit: int | None = None,
    without: bool = True,
) -> dict:
    """Answers with the top-k chunks of `mode` and (unless `without` is False) with no sources:
    {"with", "without", "examples", "misses"}, misses being the first `MISSES` questions answered
    wrong (not an exact match) with the sources.

    Question i sees its top-k rotated left by i: the best chunk stands first, last, in the middle in
    turn. In rank order it would always be [1], and a model that cites [1] whatever it read would
    score as if it had looked the fact up (the CPU demo's model, cited correctly: 0.16 and 0.54 in
    rank order for two midtrainings that both cite the source holding the answer ~0.35 of the time
    with it at each position in turn, chance 1/3)."""
    from llmlab.systems.rag.answering import answer_many

    rows = [q for q in qa if q["answers"]][:limit]
    questions = [q["question"] for q in rows]
    vectors = index.embed_queries(questions) if mode != "bm25" else [None] * len(questions)
    hits = [index.search(q, k=k, mode=mode, vector=v) for q, v in zip(questions, vectors)]
    with_r = answer_many(model, tok, questions, hits, rotations=range(len(questions)))
    bare = [[] for _ in questions]
    none_r = answer_many(model, tok, questions, bare) if without else with_r
    examples = [
        {
            "question": q["question"],
            "answers": q["answers"],
            "with": a.text,
            "without": b.text,
            "sources": [{"n": n, "doc_id": h.doc_id, "text": h.text} for n, h in enumerate(a.hits, start=1)],
            "invalid_citations": a.invalid_citations,
        }
        for q, a, b in list(zip(rows, with_r, none_r))[:3]
    ]
    misses = [
        {"question": q["question"], "answers": q["answers"], "with": a.text}
        for q, a in zip(rows, with_r)
        if not exact_match(strip_citations(a.text), q["answers"])
    ]
    return {
        "mode": mode,
        "k": k,
        "with": score_answers(with_r, rows),
        "without": score_answers(none_r, rows) if without else None,
        "examples": examples,
        "misses": misses[:MISSES],
    }


def evaluate(
    index, qa: list[dict], modes: list[str], model=None, tok=None, k: int = 3, limit: int | None = None
) -> dict:
    """{"retrieval": {mode: metrics}, "answers": answer_metrics | None} (answers with the first mode)."""
    out = {"retrieval": {m: retrieval_metrics(index, qa, m) for m in modes}, "answers": None}
    if model is not None:
        out["answers"] = answer_metrics(model, tok, index, qa, modes[0], k=k, limit=limit)
    return out
