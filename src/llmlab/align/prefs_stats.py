"""`llmlab prefs stats FILE`: the numbers a labelling effort needs, from a preferences JSONL.

Each line is a judgement as `llmlab serve --preferences` writes it (align/data.py reads the same
lines; `meta` may be missing, then the line counts as "chosen preferred", unlabelled). Reported:

- counts: judgements by label (a, b, tie, both_bad), edited ones, trainable ones (not ties), per
  annotator, and A's share of the decided judgements (≈ 0.5 unless the page's order biases people).
- agreement: a pair is (prompt, {answer, answer}), the two answers as shown, unordered (an edit
  does not make a new pair: `meta.original` is the answer that was picked). A pair judged by two or
  more annotators (each one's latest judgement; lines without an annotator are left out) compares
  the first two annotators by name: their verdict is the winning answer, "tie" or "both_bad".
  agreement = the fraction of such pairs with the same verdict (p_o), and Cohen's

      κ = (p_o − p_e) / (1 − p_e),   p_e = Σ_k p₁(k) · p₂(k),

  with k over {first answer, second answer, tie, both_bad} (answers in text order) and p₁, p₂ the
  frequencies of each verdict in the first and second annotator's slot (None when p_e = 1).
- win rates: each judgement between two different, named models gives the chosen one a win and
  the other a loss (tie or both bad: a tie for both); win rate = (wins + ties / 2) / judgements.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from llmlab.align.data import TIES, record_to_preference
from llmlab.errors import UserError
from llmlab.io import read_jsonl

LABELS = ("a", "b", "tie", "both_bad")


@dataclass
class Judgement:
    pair: tuple[str, frozenset[str]]  # (prompt, the two answers as shown), as canonical JSON
    winner: str  # the winning answer (canonical JSON), "tie" or "both_bad"
    label: str | None  # meta.label: a, b, tie, both_bad (None: a plain preference line)
    annotator: str | None
    models: tuple[str | None, str | None]  # (chosen's, rejected's)
    edited: bool


def _canon(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def read_judgements(path: str | Path) -> list[Judgement]:
    """Every line of a preferences file as a `Judgement`; a bad line is a UserError naming file:line."""
    out = []
    for where, obj in read_jsonl(path, "preferences file"):
        pref = record_to_preference(obj, where)
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        label = meta.get("label")
        if label is not None and label not in LABELS:
            raise UserError(f"{where}: meta.label {label!r}; expected one of {', '.join(LABELS)}")
        original = meta.get("original")
        shown = [{"role": "assistant", "content": original}] if isinstance(original, str) else pref.chosen
        first, second = _canon(shown), _canon(pref.rejected)
        models = meta.get("models") if isinstance(meta.get("models"), dict) else {}
        out.append(
            Judgement(
                pair=(_canon(pref.prompt), frozenset((first, second))),
                winner=label if label in TIES else first,
                label=label,
                annotator=meta.get("annotator") or None,
                models=(models.get("chosen"), models.get("rejected")),
                edited=isinstance(original, str),
            )
        )
    return out


def agreement(judgements: list[Judgement]) -> dict:
    """{"pairs": pairs judged by ≥ 2 annotators, "agreement": p_o, "kappa": Cohen's κ} (see above)."""
    latest: dict[tuple, dict[str, str]] = defaultdict(dict)  # pair → annotator → verdict
    for j in judgements:
        if j.annotator is not None:
            latest[j.pair][j.annotator] = j.winner
    slots = []
    for pair, verdicts in latest.items():
        if len(verdicts) < 2:
            continue
        order = sorted(pair[1])  # a verdict names an answer by its place in text order
        first, second = (verdicts[name] for name in sorted(verdicts)[:2])
        slots.append(tuple(v if v in TIES else str(order.index(v)) for v in (first, second)))
    if not slots:
        return {"pairs": 0, "agreement": None, "kappa": None}
    n = len(slots)
    p_o = sum(a == b for a, b in slots) / n
    p1, p2 = Counter(a for a, _ in slots), Counter(b for _, b in slots)
    p_e = sum(p1[k] * p2[k] for k in p1) / n**2
    kappa = None if p_e >= 1 else (p_o - p_e) / (1 - p_e)
    return {"pairs": n, "agreement": p_o, "kappa": kappa}


def win_rates(judgements: list[Judgement]) -> dict[str, dict]:
    """Per model: wins, losses, ties, judgements and win_rate = (wins + ties / 2) / judgements,
    over judgements between two different named models."""
    table: dict[str, Counter] = defaultdict(Counter)
    for j in judgements:
        chosen, rejected = j.models
        if chosen is None or rejected is None or chosen == rejected:
            continue
        if j.winner in TIES:
            table[chosen]["ties"] += 1
            table[rejected]["ties"] += 1
        else:
            table[chosen]["wins"] += 1
            table[rejected]["losses"] += 1
    out = {}
    for model, c in sorted(table.items()):
        total = c["wins"] + c["losses"] + c["ties"]
        out[model] = {
            "wins": c["wins"],
            "losses": c["losses"],
            "ties": c["ties"],
            "judgements": total,
            "win_rate": (c["wins"] + c["ties"] / 2) / total,
        }
    return out


def preference_stats(path: str | Path) -> dict:
    """All of the numbers above for one file."""
    js = read_judgements(path)
    labels = Counter(j.label or "unlabelled" for j in js)
    decided = labels["a"] + labels["b"]
    return {
        "file": str(path),
        "judgements": len(js),
        "labels": {k: labels[k] for k in (*LABELS, "unlabelled") if labels[k]},
        "trainable": sum(j.winner not in TIES for j in js),
        "edited": sum(j.edited for j in js),
        "pairs": len({j.pair for j in js}),
        "annotators": dict(sorted(Counter(j.annotator or "(none)" for j in js).items())),
        "a_share": labels["a"] / decided if decided else None,
        "agreement": agreement(js),
        "win_rates": win_rates(js),
    }


def format_stats(s: dict) -> str:
    """The stats as a few readable lines."""
    labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items())
    who = ", ".join(f"{k} {v}" for k, v in s["annotators"].items())
    lines = [
        f"{s['file']}: {s['judgements']} judgements of {s['pairs']} pairs ({labels}); "
        f"{s['trainable']} trainable (ties and both-bad skipped), {s['edited']} edited",
        f"annotators: {who}",
    ]
    if s["a_share"] is not None:
        lines.append(f"position: A won {s['a_share']:.1%} of the decided judgements")
    ag = s["agreement"]
    if ag["pairs"]:
        kappa = "undefined" if ag["kappa"] is None else f"{ag['kappa']:.3f}"
        lines.append(
            f"agreement: {ag['agreement']:.1%} on {ag['pairs']} pairs judged by two annotators "
            f"(Cohen's kappa {kappa})"
        )
    else:
        lines.append("agreement: no pair was judged by two annotators")
    if s["win_rates"]:
        lines.append("win rates (judgements between two different models):")
        for model, r in s["win_rates"].items():
            lines.append(
                f"  {model}: win rate {r['win_rate']:.1%} ({r['wins']} wins, {r['losses']} losses, "
                f"{r['ties']} ties)"
            )
    else:
        lines.append("win rates: no judgement compares two different models")
    return "\n".join(lines)
