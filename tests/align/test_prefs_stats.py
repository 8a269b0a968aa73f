"""`llmlab prefs stats`: counts, agreement and Cohen's kappa worked out by hand, win rates, bad lines."""

from __future__ import annotations

import json

import pytest

from llmlab.align.prefs_stats import preference_stats
from llmlab.cli import main
from llmlab.errors import UserError


def line(q, chosen, rejected, label, annotator=None, models=("m1", "m2"), original=None) -> dict:
    meta = {"label": label, "models": {"chosen": models[0], "rejected": models[1]}}
    if annotator:
        meta["annotator"] = annotator
    if original:
        meta["original"] = original
    return {"prompt": [{"role": "user", "content": q}], "chosen": chosen, "rejected": rejected, "meta": meta}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# Four pairs judged by ann and bob. Verdicts (in the first/second-answer-by-text order "x" < "y"):
#   q1: ann x, bob x (bob shows y first and picks B: the same answer)   agree
#   q2: ann y, bob y (bob edited the winner: `original` names it)        agree
#   q3: ann tie, bob x                                                   disagree
#   q4: ann both_bad, bob both_bad                                        agree
# p_o = 3/4. Slot frequencies: ann {x: 1, y: 1, tie: 1, both_bad: 1}/4, bob {x: 2, y: 1, both_bad: 1}/4,
# p_e = (1·2 + 1·1 + 1·0 + 1·1) / 16 = 1/4, κ = (3/4 − 1/4) / (1 − 1/4) = 2/3.
RECORDS = [
    line("q1", "x", "y", "a", "ann"),
    line("q1", "x", "y", "b", "bob", models=("m2", "m1")),
    line("q2", "y", "x", "a", "ann"),
    line("q2", "y, better", "x", "b", "bob", original="y"),
    line("q3", "x", "y", "tie", "ann"),
    line("q3", "x", "y", "a", "bob"),
    line("q4", "x", "y", "both_bad", "ann"),
    line("q4", "x", "y", "both_bad", "bob"),
    line("q5", "x", "y", "a", None, models=("m1", "m1")),  # no annotator, one model: counts only
]


def test_counts_agreement_kappa_and_win_rates_by_hand(tmp_path):
    s = preference_stats(write(tmp_path / "p.jsonl", RECORDS))
    assert s["judgements"] == 9 and s["pairs"] == 5 and s["edited"] == 1 and s["trainable"] == 6
    assert s["labels"] == {"a": 4, "b": 2, "tie": 1, "both_bad": 2}
    assert s["annotators"] == {"(none)": 1, "ann": 4, "bob": 4} and s["a_share"] == pytest.approx(4 / 6)
    assert s["agreement"]["pairs"] == 4
    assert s["agreement"]["agreement"] == pytest.approx(3 / 4)
    assert s["agreement"]["kappa"] == pytest.approx(2 / 3)
    # m1 vs m2 (q5 compares m1 with itself): chosen m1 in q1(ann), q2, q3(bob); chosen m2 in q1(bob);
    # ties: q3(ann), q4 ×2.
    m1, m2 = s["win_rates"]["m1"], s["win_rates"]["m2"]
    assert (m1["wins"], m1["losses"], m1["ties"]) == (4, 1, 3) and (m2["wins"], m2["losses"]) == (1, 4)
    assert m1["win_rate"] == pytest.approx((4 + 1.5) / 8) and m2["win_rate"] == pytest.approx(2.5 / 8)


def test_an_annotators_latest_judgement_counts_and_one_annotator_is_no_agreement(tmp_path):
    records = [
        line("q", "x", "y", "a", "ann"),
        line("q", "y", "x", "a", "ann"),
        line("q", "y", "x", "b", "bob"),
    ]
    s = preference_stats(write(tmp_path / "p.jsonl", records))
    assert s["agreement"] == {"pairs": 1, "agreement": 1.0, "kappa": None}  # ann changed to y, as bob
    s = preference_stats(write(tmp_path / "q.jsonl", records[:2]))
    assert s["agreement"] == {"pairs": 0, "agreement": None, "kappa": None}


def test_cli_prints_the_numbers_and_bad_lines_exit_2(tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", RECORDS)
    assert main(["prefs", "stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "9 judgements of 5 pairs" in out and "agreement: 75.0% on 4 pairs" in out and "0.667" in out
    assert "m1: win rate 68.8%" in out
    assert main(["prefs", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agreement"]["pairs"] == 4
    bad = write(tmp_path / "bad.jsonl", [RECORDS[0], {**RECORDS[0], "meta": {"label": "maybe"}}])
    assert main(["prefs", "stats", str(bad)]) == 2
    assert "bad.jsonl:2: meta.label 'maybe'" in capsys.readouterr().err
    with pytest.raises(UserError, match="no such preferences file"):
        preference_stats(tmp_path / "missing.jsonl")
