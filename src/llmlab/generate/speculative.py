"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes k tokens,
the target model scores all of them in one forward pass, and a rejection rule keeps the output
distributed exactly as the target's.

For drafted tokens x₁..x_k with draft distributions q₁..q_k and target distributions p₁..p_{k+1}:

    for i = 1..k:  accept xᵢ with probability min(1, pᵢ(xᵢ) / qᵢ(xᵢ))
                   on the first rejection draw y ~ norm(max(0, pᵢ − qᵢ)) and stop
    if all k were accepted, draw a bonus y ~ p_{k+1}

P(output = x) = q(x)·min(1, p(x)/q(x)) + (1 − Σ_u min(q(u), p(u)))·max(0, p(x) − q(x))/Σ_u max(0, p(u) − q(u))
              = min(q(x), p(x)) + max(0, p(x) − q(x)) = p(x).
Greedy is the special case where p and q are one-hot at their argmax: a drafted token is accepted
exactly when it is the target's argmax, and the "residual" is the target's argmax, so the output is
token for token the target's greedy decoding. Each round costs k draft steps and one target forward
over k + 1 tokens and yields between 1 and k + 1 tokens; the acceptance rate is reported.

Both models must share the tokenizer (vocabularies may differ in padding: the common prefix is used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmlab.errors import UserError
from llmlab.generate.rows import eval_mode
from llmlab.generate.sampling import BatchSampler, SamplingParams
from llmlab.model.kv_cache import KVCache


@dataclass
class SpeculativeResult:
    token_ids: list[int]  # without the stop token
    finish_reason: str  # "stop" or "length"
    drafted: int  # tokens proposed by the draft model
    accepted: int  # of which the target accepted
    rounds: int  # target forward passes after the prefill

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def accept_or_resample(
    p: torch.Tensor, q: torch.Tensor, drafted: Sequence[int], generator: torch.Generator | None = None
) -> tuple[int, int]:
    """The rejection rule. p: [k+1, V] target probs, q: [k, V] draft probs, drafted: k tokens.
    Returns (m, y): the first m drafted tokens are accepted, then token y (resampled or bonus)."""
    k = len(drafted)
    for i, x in enumerate(drafted):
        px, qx = float(p[i, x]), float(q[i, x])
        r = torch.rand((), generator=generator, device=p.device).item()
        if qx > 0 and r < min(1.0, px / qx):
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        if residual.sum() <= 0:  # p == q up to rounding: any draw from p is exact
            residual = p[i]
        y = torch.multinomial(residual / residual.sum(), 1, generator=generator).item()
        return i, int(y)
    y = torch.multinomial(p[k], 1, generator=generator).item()
    return k, int(y)


@torch.inference_mode()
def speculative_generate(
    target,
    draft,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    num_draft: int = 4,
    stop_token_ids: Sequence[int] = (),
) -> SpeculativeResult:
    """Generate for one prompt with `target`'s output distribution, proposing `num_draft` tokens a round.
    Both models run in eval mode (no dropout) and get their own mode back afterwards."""
    with eval_mode(target, draft):
        return _speculative(target, draft, prompt_ids, params, num_draft, stop_token_ids)


def _speculative(
    target,
    draft,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    num_draft: int,
    stop_token_ids: Sequence[int],
) -> SpeculativeResult:
    params.validate()
    if params.uses_penalties:
        raise UserError("speculative decoding does not support repetition/presence/frequency penalties")
    if num_draft < 1:
        raise UserError(f"num_draft must be >= 1, got {num_draft}")
    dev = next(target.parameters()).device
    V = min(target.cfg.vocab_size, draft.cfg.vocab_size)
    ctx = min(target.cfg.context, draft.cfg.context)
    prompt = list(prompt_ids)
    n0 = len(prompt)
    if n0 > ctx:
        raise UserError(f"prompt of {n0} tokens exceeds the context window of {ctx}")
    max_new = min(params.max_new_tokens, ctx - n0 + 1)
    # One row's settings over the common vocabulary: q and p are its distributions at several positions.
    sampler = BatchSampler([params], V, dev)
    g = sampler.generators[0]
    stops = set(stop_token_ids)
    dtype = lambda m: next(m.parameters()).dtype  # noqa: E731
    t_cache = KVCache(target.cfg, 1, max_len=ctx, device=dev, dtype=dtype(target))
    d_cache = KVCache(draft.cfg, 1, max_len=ctx, device=dev, dtype=dtype(draft))

    def forward(model, cache, tokens: list[int], pos: int) -> torch.Tensor:
        return model(torch.tensor([tokens], device=dev), cache=cache, cache_pos=pos)[0, :, :V]

    # Invariant: the target cache holds ids[:-1]; `pending` are committed tokens not yet in the draft cache.
    ids = list(prompt)
    if n0 > 1:
        forward(target, t_cache, ids[:-1], 0)
        forward(draft, d_cache, ids[:-1], 0)
    d_len = n0 - 1
    out: list[int] = []
    drafted = accepted = rounds = 0
    while len(out) < max_new:
        N = len(ids)
        k = min(num_draft, max_new - len(out) - 1, ctx - N)  # the target reads positions up to N−1+k
        drafts, qs = [], []
        d_logits = forward(draft, d_cache, ids[d_len:], d_len)[-1:] if k > 0 else None
        for i in range(k):
            q = sampler.probs(d_logits)[0]
            x = int(q.argmax()) if params.greedy else int(torch.multinomial(q, 1, generator=g))
            drafts.append(x)
            qs.append(q)
            if i < k - 1:
                d_logits = forward(draft, d_cache, [x], N + i)
        d_len = N + max(k - 1, 0) if k > 0 else d_len
        p = sampler.probs(forward(target, t_cache, [ids[-1], *drafts], N - 1))
        if k > 0:
            m, y = accept_or_resample(p, torch.stack(qs), drafts, g)
        else:
            m, y = 0, (int(p[0].argmax()) if params.greedy else int(torch.multinomial(p[0], 1, generator=g)))
        drafted, accepted, rounds = drafted + k, accepted + m, rounds + 1
        d_len = min(d_len, N + m)  # the draft cache is valid up to the last accepted token
        for tok in [*drafts[:m], y]:
            if tok in stops:
                return SpeculativeResult(out, "stop", drafted, accepted, rounds)
            out.append(tok)
            ids.append(tok)
            if len(out) >= max_new:
                break
    return SpeculativeResult(out, "length", drafted, accepted, rounds)
