"""The RAG report sections show the stage dict's numbers; an undefined citation score is '-'."""

from __future__ import annotations

from llmlab.report.render import Code, Table
from llmlab.systems.rag.stage import answer_targets, headline_eval, headline_index, section_eval

RETRIEVAL = {
    "queries": 105,
    "recall@1": 0.9,
    "recall@5": 0.95,
    "recall@10": 1.0,
    "mrr@10": 0.92,
    "ndcg@10": 0.93,
}
SCORES = {
    "questions": 50,
    "exact_match": 0.42,
    "f1": 0.5,
    "citation_precision": 0.8,
    "citation_recall": 0.7,
    "invalid_citation_rate": 0.02,
}
RESULT = {
    "retrieval": {"bm25": RETRIEVAL, "hybrid": {**RETRIEVAL, "recall@5": 0.97}},
    "answers": {
        "mode": "hybrid",
        "k": 1,
        "with": SCORES,
        "more": {"k": 3, **SCORES, "exact_match": 0.2},
        "without": {**SCORES, "exact_match": 0.04, "citation_precision": None, "citation_recall": None},
        "examples": [
            {
                "question": "Who founded Souvel?",
                "answers": ["Thon Biros"],
                "with": "Thon Biros [1]",
                "without": "Vi Horus",
                "sources": [{"n": 1, "doc_id": "towns/souvel", "text": "Souvel was founded by Thon Biros."}],
                "invalid_citations": [],
            }
        ],
        "misses": [
            {"question": "What are the people of Souvel known for?", "answers": ["spices"], "with": "bars"}
        ],
    },
}


def test_sections_and_headlines_show_the_numbers():
    blocks = section_eval(RESULT, ctx=None)
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].rows[1] == ["hybrid", 105, 0.9, 0.97, 1.0, 0.92, 0.93]
    assert tables[1].rows[0][:3] == ["top 1", 50, 0.42]
    assert tables[2].rows == [["What are the people of Souvel known for?", "spices", "bars"]]
    assert tables[1].rows[1][:3] == ["top 3", 50, 0.2]
    assert tables[1].rows[2][2] == 0.04 and tables[1].rows[2][4:6] == ["-", "-"]
    (code,) = [b for b in blocks if isinstance(b, Code)]
    assert "[1] towns/souvel" in code.text and "with retrieval: Thon Biros [1]" in code.text
    rows = headline_eval(RESULT, {})
    assert rows[0][:2] == ["retrieval recall@5 (hybrid)", "0.970"]
    assert rows[1][1:] == ["0.420", "without retrieval 0.040"]
    assert headline_index({"documents": 100, "chunks": 100, "embedder": None}, {})[0][2] == "BM25 only"
    no_model = section_eval({**RESULT, "answers": None}, ctx=None)
    assert "not measured" in no_model[-1].text


def test_targets_read_exact_match_with_the_top_source_and_citations_among_more():
    a = {
        "with": {**SCORES, "grounded_exact_match": 0.9, "cited_correctly": 1.0},
        "more": {"k": 3, **SCORES, "grounded_exact_match": 0.5, "cited_correctly": 0.7},
        "without": {**SCORES, "exact_match": 0.04},
    }
    t = answer_targets(a)
    signals = {"right, citation aside": a["with"]["exact_match"]}  # what the miss line shows
    assert t["unseen_facts"] == {"without": 0.04, "with": 0.9, "signals": signals}
    assert t["unseen_facts_citations"] == {"without": None, "with": 0.7}
