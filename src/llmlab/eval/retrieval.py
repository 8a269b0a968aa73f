"""Retrieval and question-answering metrics, the way IR and QA papers compute them.

Retrieval, for one query with a ranked list of document ids d₁, d₂, … (a repeated id counts at its
first rank only, so a ranking of chunks can be passed as the ranking of their documents):

    recall@k = |{d₁..d_k} ∩ R| / |R|                              R: the relevant ids
    MRR@k    = 1 / rank of the first relevant id within the top k (0 when there is none)
    nDCG@k   = DCG@k / IDCG@k,  DCG@k = Σᵢ₌₁..ₖ gᵢ / log₂(i + 1)   gᵢ: the graded gain of dᵢ (linear)

where IDCG@k is the DCG of the ideal ranking (all gains sorted, largest first). These equal
trec_eval's `recall_k`, `recip_rank` (on a run cut to k) and `ndcg_cut_k` (tests/eval/test_retrieval.py).

Answers, after SQuAD's normalisation (lower case, drop punctuation and the articles a/an/the, collapse
white space), the maximum over the gold answers:

    exact_match = 1 if norm(prediction) = norm(gold) else 0
    token_f1    = 2·P·R / (P + R),  P = |common| / |pred tokens|,  R = |common| / |gold tokens|

with `common` the multiset intersection of the two token lists.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _first_k(ranked_ids: Sequence[str], k: int) -> list[str]:
    """The first k distinct ids, in rank order."""
    seen: dict[str, None] = {}
    for d in ranked_ids:
        if len(seen) == k:
            break
        seen.setdefault(d, None)
    return list(seen)


def recall_at_k(ranked_ids: Sequence[str], relevant_ids: Iterable[str], k: int) -> float:
    """|top k ∩ relevant| / |relevant| (0.0 when nothing is relevant)."""
    relevant = set(relevant_ids)
    if not relevant:
        return 0.0
    return len(set(_first_k(ranked_ids, k)) & relevant) / len(relevant)


def mrr(ranked_ids: Sequence[str], relevant_ids: Iterable[str], k: int = 10) -> float:
    """1 / rank of the first relevant id in the top k, else 0."""
    relevant = set(relevant_ids)
    for rank, d in enumerate(_first_k(ranked_ids, k), start=1):
        if d in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_ids: Sequence[str], relevance: Mapping[str, float], k: int = 10) -> float:
    """Σ gᵢ/log₂(i+1) over the top k, divided by the same sum for the ideal order (linear gains;
    gains ≤ 0 count as 0, as in trec_eval)."""
    gains = {d: float(g) for d, g in relevance.items() if g > 0}
    dcg = sum(gains.get(d, 0.0) / math.log2(i + 1) for i, d in enumerate(_first_k(ranked_ids, k), start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # both empty: 1, one empty: 0 (as SQuAD v2)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * p * r / (p + r)


def token_f1(prediction: str, answers: Iterable[str]) -> float:
    """The best token F1 between the normalised prediction and any normalised gold answer."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(a).split()) for a in answers), default=0.0)


def supporting_sources(sources: Sequence[str], answers: Iterable[str]) -> set[int]:
    """The numbers n (from 1) of the sources whose normalised text contains a normalised gold answer,
    as whole words: padded with spaces, so "osk" is not found in "kiosk"."""
    golds = [g for g in (normalize_answer(a) for a in answers) if g]
    return {
        n
        for n, text in enumerate(sources, start=1)
        if any(f" {g} " in f" {normalize_answer(text)} " for g in golds)
    }


def citation_scores(cited: Iterable[int], sources: Sequence[str], answers: Iterable[str]) -> dict:
    """Citation precision and recall of one answer, given the texts of the sources it was shown
    (source n is `sources[n - 1]`). A source *supports* the answer when its normalised text
    contains a normalised gold answer.

        precision = |cited ∩ supporting| / |cited|       (None when nothing is cited)
        recall    = |cited ∩ supporting| / |supporting|  (None when no source supports it)
    """
    supporting = supporting_sources(sources, answers)
    cited_set = set(cited)
    good = len(cited_set & supporting)
    return {
        "precision": good / len(cited_set) if cited_set else None,
        "recall": good / len(supporting) if supporting else None,
    }
