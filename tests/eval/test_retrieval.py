"""Retrieval and QA metrics: equal to trec_eval (through pytrec_eval) and to tables worked by hand."""

from __future__ import annotations

import math
import random

import pytest

from llmlab.eval.retrieval import (
    citation_scores,
    exact_match,
    mrr,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    token_f1,
)


def test_hand_computed_table():
    ranked = ["d3", "d1", "d7", "d2", "d9"]
    relevant = {"d1": 2, "d2": 1, "d5": 3}
    assert recall_at_k(ranked, relevant, 1) == 0.0
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert mrr(ranked, relevant, k=10) == pytest.approx(1 / 2)
    assert mrr(ranked, relevant, k=1) == 0.0
    # DCG = 2/log2(3) + 1/log2(5); ideal order 3, 2, 1: 3/1 + 2/log2(3) + 1/2
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at_k(ranked, relevant, k=10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["d5", "d1", "d2"], relevant, k=3) == pytest.approx(1.0)


def test_a_repeated_document_counts_once_at_its_first_rank():
    # chunks of one document: d1 d1 d2 is the document ranking d1 d2
    assert recall_at_k(["d1", "d1", "d2"], {"d2"}, 2) == 1.0
    assert mrr(["d1", "d1", "d2"], {"d2"}) == 0.5


def test_equal_to_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier not installed")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(30)]
    qrels, run = {}, {}
    for q in range(40):
        rel = rng.sample(docs, rng.randint(1, 6))
        qrels[f"q{q}"] = {d: rng.randint(1, 3) for d in rel}
        ranked = rng.sample(docs, 10)  # a run cut to 10: trec_eval's recip_rank then equals MRR@10
        run[f"q{q}"] = {d: float(10 - i) for i, d in enumerate(ranked)}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recall.1,5,10", "recip_rank", "ndcg_cut.10"})
    for q, measures in ev.evaluate(run).items():
        ranked = sorted(run[q], key=lambda d: -run[q][d])
        for k in (1, 5, 10):
            assert recall_at_k(ranked, qrels[q], k) == pytest.approx(measures[f"recall_{k}"])
        assert mrr(ranked, qrels[q], k=10) == pytest.approx(measures["recip_rank"])
        assert ndcg_at_k(ranked, qrels[q], k=10) == pytest.approx(measures["ndcg_cut_10"])


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Glass-Loom!") == "glassloom"
    assert normalize_answer("an Apple, a pear") == "apple pear"
    assert exact_match("the Osk.", ["Osk", "river Osk"]) == 1.0
    assert exact_match("Osk river", ["Osk"]) == 0.0
    # pred "ilsa dorne of kelmar", gold "ilsa dorne": P = 2/4, R = 1 → F1 = 2/3
    assert token_f1("Ilsa Dorne of Kelmar", ["Ilsa Dorne"]) == pytest.approx(2 / 3)
    assert token_f1("Ilsa Dorne of Kelmar", ["nobody", "Ilsa Dorne"]) == pytest.approx(2 / 3)
    assert token_f1("", ["x"]) == 0.0


def test_citation_precision_and_recall():
    sources = ["Kelmar was founded by Ilsa Dorne.", "A kiosk sells bread.", "Ilsa Dorne was born in Brisk."]
    s = citation_scores([1, 2], sources, ["Ilsa Dorne"])
    assert s == {"precision": 0.5, "recall": 0.5}
    assert citation_scores([], sources, ["Ilsa Dorne"])["precision"] is None
    assert citation_scores([2], sources, ["osk"])["recall"] is None  # whole words: no "osk" in "kiosk"
