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
