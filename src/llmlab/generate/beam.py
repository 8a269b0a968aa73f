"""Beam search: keep the `num_beams` most likely continuations, not just the single most likely token.

Every step extends each live beam by every token and keeps the best 2·num_beams candidates by the
running sum of log-probabilities Σ log p(yᵢ | y<i). A candidate that ends in a stop token becomes a
finished hypothesis (the stop token's log p counts, its length does not, as in HF) scored

    score = Σ log p / length^α              (α = length_penalty; α > 0 favours longer outputs)

and the best `num_beams` of the rest carry on. With `early_stopping=True` the search ends once
`num_beams` hypotheses are finished; with `False` it ends when no live beam can still beat the worst
kept hypothesis (HF's heuristic: the best live beam, scored at its current length). Beams still live
at `max_new_tokens` are finished as they are. Returns the n best hypotheses, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmlab.generate.rows import eval_mode
from llmlab.model.kv_cache import KVCache


@dataclass
class Hypothesis:
    token_ids: list[int]  # without the stop token
    score: float  # Σ log p / length^α
    sum_logprob: float
    finish_reason: str  # "stop" or "length"


def _score(sum_logprob: float, length: int, alpha: float) -> float:
    return sum_logprob / max(length, 1) ** alpha


@torch.inference_mode()
def beam_search(
    model,
    prompt_ids: Sequence[int],
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    num_return: int = 1,
    stop_token_ids: Sequence[int] = (),
) -> list[Hypothesis]:
    """The `num_return` best hypotheses (≤ num_beams), best first. The model runs in eval mode (no
    dropout) and gets its own mode back afterwards."""
    with eval_mode(model):
        return _beam_search(
            model,
            prompt_ids,
            num_beams,
            max_new_tokens,
            length_penalty,
            early_stopping,
            num_return,
            stop_token_ids,
        )


def _beam_search(
    model,
    prompt_ids: Sequence[int],
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float,
    early_stopping: bool,
    num_return: int,
    stop_token_ids: Sequence[int],
) -> list[Hypothesis]:
    cfg, dev = model.cfg, next(model.parameters()).device
    n = len(prompt_ids)
    max_new_tokens = min(max_new_tokens, cfg.context - n + 1)
    stops = set(stop_token_ids)
    if max_new_tokens <= 0:
        return [Hypothesis([], 0.0, 0.0, "length")]
    cache = KVCache(cfg, 1, max_len=n + max_new_tokens, device=dev, dtype=next(model.parameters()).dtype)
    logits = model(torch.tensor([list(prompt_ids)], device=dev), cache=cache)[:, -1]
    cache.reorder(torch.zeros(num_beams, dtype=torch.long, device=dev))
    logits = logits.expand(num_beams, -1)
    beams: list[list[int]] = [[] for _ in range(num_beams)]
    # Only beam 0 is real at the start; the copies start at −∞ so the first step expands it alone.
    beam_scores = torch.full((num_beams,), -torch.inf, device=dev)
    beam_scores[0] = 0.0
    finished: list[Hypothesis] = []

    def worst_kept() -> float:
        kept = sorted(h.score for h in finished)[-num_beams:]
        return kept[0] if len(kept) >= num_beams else -float("inf")

    for t in range(max_new_tokens):
        cand = beam_scores[:, None] + logits.float().log_softmax(-1)  # [nb, V]
        V = cand.shape[-1]
        top_scores, top_idx = cand.flatten().topk(min(2 * num_beams, cand.numel()))
        next_beams, next_scores, origin = [], [], []
        for s, i in zip(top_scores.tolist(), top_idx.tolist()):
            if s == -float("inf"):
                break
            b, tok = divmod(i, V)
            if tok in stops:
                finished.append(
                    Hypothesis(list(beams[b]), _score(s, len(beams[b]), length_penalty), s, "stop")
                )
                continue
            next_beams.append([*beams[b], tok])
            next_scores.append(s)
            origin.append(b)
            if len(next_beams) == num_beams:
                break
        if not next_beams:
            break
        if len(finished) >= num_beams and (
            early_stopping or max(next_scores) / (t + 1) ** length_penalty <= worst_kept()
        ):
            break
        if t == max_new_tokens - 1:
            for toks, s in zip(next_beams, next_scores):
                finished.append(Hypothesis(toks, _score(s, len(toks), length_penalty), s, "length"))
            break
        while len(next_beams) < num_beams:  # fewer live candidates than beams: pad with dead copies
            next_beams.append(next_beams[0])
            next_scores.append(-float("inf"))
            origin.append(origin[0])
        beams = next_beams
        beam_scores = torch.tensor(next_scores, device=dev)
        cache.reorder(torch.tensor(origin, device=dev))
        tokens = torch.tensor([bm[-1] for bm in beams], device=dev)
        logits = model(tokens[:, None], cache=cache, cache_pos=n + t)[:, -1]
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[: max(1, min(num_return, num_beams))]
