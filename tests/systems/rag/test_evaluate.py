"""`rag eval` on a QA file: document-level retrieval metrics, graded relevance, bad lines named."""

from __future__ import annotations

import json
import math

import pytest

from llmlab.errors import UserError
from llmlab.systems.rag import build_index
from llmlab.systems.rag.evaluate import read_qa, retrieval_metrics


def test_graded_relevance_reaches_ndcg(docs_dir, tmp_path):
    index = build_index([docs_dir], tmp_path / "idx", dense="none")
    ranked = [h.doc_id for h in index.search("Osk river Kelmar", k=10, mode="bm25")]
    assert set(ranked[:2]) == {"kelmar.md", "doc-9"}
    qa = tmp_path / "qa.jsonl"
    # the second-ranked document carries the larger gain: nDCG < 1 although recall@2 = 1
    gains = {ranked[0]: 1, ranked[1]: 3}
    qa.write_text(json.dumps({"question": "Osk river Kelmar", "relevant": gains}) + "\n")
    m = retrieval_metrics(index, read_qa(qa), "bm25")
    ideal = 3 + 1 / math.log2(3)
    assert m["recall@5"] == 1.0 and m["mrr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 + 3 / math.log2(3)) / ideal)


def test_bad_relevant_field_names_the_line(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "a?", "relevant": ["x"]}\n{"question": "b?", "relevant": "x"}\n')
    with pytest.raises(UserError, match=r"qa\.jsonl:2: 'relevant' must be"):
        read_qa(qa)


def test_a_grounded_answer_is_exact_and_cites_a_source_that_holds_it():
    from llmlab.systems.rag.answering import Answer
    from llmlab.systems.rag.evaluate import score_answers
    from llmlab.systems.rag.retrievers import Hit

    hits = [
        Hit("a", "a#0", "Kelmar was founded by Ilsa Dorne.", 1.0),
        Hit("b", "b#0", "Brisk is a town.", 0.5),
    ]
    qa = [{"answers": ["Ilsa Dorne"]}] * 4
    answers = [
        Answer("Ilsa Dorne [1]", [1], [], hits),  # exact and cites the holder: grounded
        Answer("Ilsa Dorne [2]", [2], [], hits),  # exact, but cites a source without it
        Answer("Ilsa Dorne", [], [], hits),  # exact, cites nothing
        Answer("Tavo [1]", [1], [], hits),  # wrong
    ]
    s = score_answers(answers, qa)
    assert s["exact_match"] == 0.75 and s["grounded_exact_match"] == 0.25
    assert s["cited_correctly"] == 0.5  # the first and the wrong answer cite the holder
    assert score_answers([Answer("Ilsa Dorne", [], [], [])], qa[:1])["grounded_exact_match"] == 0.0
