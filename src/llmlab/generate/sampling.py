"""Sampling settings and the logits processors, vectorised over a batch where every row has its own.

One decode step turns the model's raw logits zᵥ (one row per sequence) into the next token:

    1. logit bias         zᵥ ← zᵥ + bᵥ                                     (OpenAI `logit_bias`)
    2. repetition penalty zᵥ ← zᵥ / r if zᵥ > 0 else zᵥ · r, for v seen   (HF / CTRL; prompt + output)
    3. presence/frequency zᵥ ← zᵥ − α_presence·[cᵥ > 0] − α_frequency·cᵥ  (OpenAI; cᵥ = count of v in
                                                                           the output so far)
    4. temperature        zᵥ ← zᵥ / T                  (T = 0 means greedy: argmax of step 1-3's z)
    5. top-k              keep the k largest zᵥ
    6. top-p (nucleus)    sort p = softmax(z) descending; keep the smallest prefix whose mass reaches p
                          (the token that crosses p is kept, and always the most likely one)
    7. min-p              keep v with pᵥ ≥ min_p · maxᵤ pᵤ
    8. sample             v ~ softmax(z) over the kept tokens, by the inverse CDF of one uniform u
                          drawn from the row's own counter-based stream (`uniforms`):
                          v = min{v : Σ_{w≤v} e^{z_w − max z} > u · Σ_w e^{z_w − max z}}

Why temperature before truncation (HF's order, not llama.cpp's "temperature last"): the thresholds of
top-p and min-p then refer to the distribution that is actually sampled, so `top_p=0.9` means "90% of
the mass you draw from", and our processors are pinned token-for-token to transformers' own
`TemperatureLogitsWarper`/`TopKLogitsWarper`/`TopPLogitsWarper`/`MinPLogitsWarper` in the tests.
(llama.cpp's order makes truncation independent of T, which protects against junk tokens at very high
temperature; with T ≤ 1 the two orders differ little.)

Log-probabilities reported to the caller are those of the *model* (log-softmax of the raw logits,
before any of the steps above): the likelihood of the text under the model, whatever the settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.generate.streams import inverse_cdf, stream_key, uniforms


@dataclass
class SamplingParams:
    """Settings for one request (one row of a batch). Defaults change nothing: plain sampling at T=1."""

    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; HF semantics
    presence_penalty: float = 0.0  # OpenAI semantics, over generated tokens
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None  # None: a fresh random seed
    stop: Sequence[str] = ()  # stop strings (the text is cut before them)
    stop_token_ids: Sequence[int] | None = None  # None: the engine's defaults (<|end|>, <|bos|>, ...)
    logprobs: int | None = None  # None: none; 0: the chosen token's; n > 0: and the top n
    echo: bool = False  # also the prompt's log-probabilities (Completion.prompt_logprobs)

    def validate(self) -> SamplingParams:
        if self.max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise UserError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise UserError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.logprobs is not None and self.logprobs < 0:
            raise UserError(f"logprobs must be >= 0, got {self.logprobs}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise UserError("stop strings must be non-empty")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


def check_logit_bias(logit_bias: dict, vocab_size: int) -> dict[int, float]:
    """{token id: bias} with every id an integer in [0, vocab_size) (JSON's "42" included), else a
    UserError naming the id and the range."""
    checked = {}
    for tok, val in logit_bias.items():
        if isinstance(tok, str) and tok.strip().lstrip("-").isdigit():
            tid = int(tok)
        else:
            tid = tok if isinstance(tok, int) and not isinstance(tok, bool) else None
        if tid is None or not 0 <= tid < vocab_size:
            raise UserError(
                f"logit_bias: token id {tok!r} is not in the vocabulary; ids are integers in [0, {vocab_size})"
            )
        checked[tid] = float(val)
    return checked


# ---- the individual processors (each takes and returns float logits [B, V]) ----------------------


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """zᵥ + bᵥ; `bias` is a dense [B, V] tensor (zeros where no bias)."""
    return logits if bias is None else logits + bias


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's rule for every token already seen (prompt or output): z / r where z > 0, z · r where z ≤ 0.
    seen: bool [B, V]; penalty: [B, 1]."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's rule: zᵥ − presence·[cᵥ > 0] − frequency·cᵥ (cᵥ = times v was generated so far)."""
    return logits - presence * (counts > 0) - frequency * counts


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """z / T per row; greedy rows (T = 0) are left alone (they take the argmax)."""
    return logits / torch.where(temperature > 0, temperature, torch.ones_like(temperature))


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (k = 0: keep all). Ties at the k-th value are all kept, as in HF."""
    B, V = logits.shape
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V)).expand(B, 1)  # [B, 1]
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, k - 1)  # [B, 1]
    return logits.masked_fill(logits < kth, -math.inf)


TINY = 1e-6  # the smallest temperature / repetition penalty the sampler divides by


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus: the smallest set of most likely tokens whose probability reaches p.

    Sort descending, c_i = Σ_{j<i} p_j (mass *before* token i); keep token i while c_i < p. The token
    whose own mass crosses p is therefore kept, and so is the most likely token (c_0 = 0)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False  # even a top_p that rounds to 0 in float32
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Keep tokens with pᵥ ≥ min_p · max p (min_p = 0 keeps all)."""
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, -math.inf)


# ---- a batch of rows with their own settings ------------------------------------------------------


NEUTRAL = SamplingParams(temperature=0)  # what a free slot holds


class BatchSampler:
    """Holds per-row settings as [B, 1] tensors plus the penalty state (seen tokens, output counts) and a
    random stream per row (a key and a draw counter, `generate/streams.py`, for `sample` and the
    fixed-shape step; a torch.Generator seeded alike for speculative decoding), so a row draws the
    same tokens whatever else shares its batch.

    Rows are slots: `assign(b, params)` puts a new request's settings into slot b and `move(src, dst)`
    relocates one (the engine keeps its running rows in slots 0..R-1); `process` and `sample` work on
    the first R = len(logits) slots. A fixed-shape step passes the processors it was built for
    (`uses`), so it makes no Python decision per row.

    A sampler of one row also processes logits of several positions [T, V] under that one setting
    (speculative decoding's draft and target distributions); its penalty state is then that row's."""

    def __init__(
        self,
        params: Sequence[SamplingParams],
        vocab_size: int,
        device: torch.device | str = "cpu",
        capacity: int | None = None,
        bias: bool = False,
        penalties: bool = False,
    ):
        params = list(params)
        B, V = capacity or len(params), vocab_size
        self.V, self.device = V, torch.device(device)
        self.params: list[SamplingParams] = [NEUTRAL] * B
        self.temperature = torch.zeros(B, 1, device=device)
        self.top_k = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.top_p = torch.ones(B, 1, device=device)
        self.min_p = torch.zeros(B, 1, device=device)
        self.bias = torch.zeros(B, V, device=device) if bias or any(p.logit_bias for p in params) else None
        self.penalties = penalties or any(p.uses_penalties for p in params)
        if self.penalties:
            self.rep = torch.ones(B, 1, device=device)
            self.presence = torch.zeros(B, 1, device=device)
            self.frequency = torch.zeros(B, 1, device=device)
            self.seen = torch.zeros(B, V, dtype=torch.bool, device=device)
            self.counts = torch.zeros(B, V, dtype=torch.float32, device=device)
        self.generators: list[torch.Generator | None] = [None] * B
        self.keys = torch.zeros(B, dtype=torch.long, device=device)  # stream_key(seed) per slot
        self.draws = torch.zeros(B, dtype=torch.long, device=device)  # uniforms drawn so far per slot
        for b, p in enumerate(params):
            self.assign(b, p)

    def assign(self, b: int, p: SamplingParams, seed_offset: int = 0) -> None:
        """Slot b takes request settings `p` (fresh penalty state; its stream and generator seeded
        with p.seed + seed_offset, or randomly when p.seed is None)."""
        if (p.logit_bias and self.bias is None) or (p.uses_penalties and not self.penalties):
            raise ValueError("this sampler was built without logit bias / penalties")
        self.params[b] = p
        # Floors for values float32 cannot divide by (5e-324 is 0 there): as good as greedy / as strong.
        temperature = max(p.temperature, TINY) if p.temperature > 0 else 0.0
        self.temperature[b], self.top_k[b], self.top_p[b], self.min_p[b] = (
            temperature,
            p.top_k,
            p.top_p,
            p.min_p,
        )
        if self.bias is not None:
            self.bias[b] = 0
            for tok, val in check_logit_bias(p.logit_bias, self.V).items():
                self.bias[b, tok] = val
        if self.penalties:
            self.rep[b], self.presence[b], self.frequency[b] = (
                max(p.repetition_penalty, TINY),
                p.presence_penalty,
                p.frequency_penalty,
            )
            self.seen[b], self.counts[b] = False, 0
        g = torch.Generator(device=self.device)
        seed = g.seed() if p.seed is None else int(p.seed) + seed_offset
        g.manual_seed(seed % 2**64)
        self.generators[b] = g
        self.keys[b], self.draws[b] = stream_key(seed), 0

    def clear(self, b: int) -> None:
        """Slot b is free: neutral (greedy) settings, so it turns no processor on for a fixed step."""
        self.params[b] = NEUTRAL

    def move(self, src: int | Sequence[int], dst: int | Sequence[int]) -> None:
        """Slot `src`'s settings, penalty state and random stream move to slot `dst` (or each of the
        slots `src` to the one at its place in `dst`, in one indexed copy per tensor)."""
        srcs, dsts = ([src], [dst]) if isinstance(src, int) else (list(src), list(dst))
        for s, d in zip(srcs, dsts):
            self.params[d], self.generators[d] = self.params[s], self.generators[s]
        tensors = [self.temperature, self.top_k, self.top_p, self.min_p, self.keys, self.draws]
        tensors += [self.bias] if self.bias is not None else []
        tensors += [self.rep, self.presence, self.frequency, self.seen, self.counts] if self.penalties else []
        si, di = (torch.tensor(x, device=self.device) for x in (srcs, dsts))
        for t in tensors:
            t[di] = t[si]

    def copy_penalty_state(self, src: int, dst: int) -> None:
        """n samples of one prompt: slot `dst` starts from `src`'s seen tokens (the prompt)."""
        if self.penalties:
            self.seen[dst], self.counts[dst] = self.seen[src], self.counts[src]

    def uses(self, rows: slice) -> tuple[bool, bool, bool, bool]:
        """(all greedy, any top-k, any top-p, any min-p) over the slots `rows`."""
        ps = self.params[rows]
        return (
            all(p.greedy for p in ps),
            any(p.top_k > 0 for p in ps),
            any(p.top_p < 1 for p in ps),
            any(p.min_p > 0 for p in ps),
        )

    @property
    def all_greedy(self) -> bool:
        return all(p.greedy for p in self.params)

    def observe_prompt(self, b: int, ids: Sequence[int]) -> None:
        """Mark prompt tokens as seen (for the repetition penalty)."""
        if self.penalties and len(ids):
            self.seen[b, torch.as_tensor(list(ids), device=self.seen.device)] = True

    def observe(self, tokens: torch.Tensor, start: int = 0) -> None:
        """Record the tokens just generated by slots start..start+len(tokens)-1, tokens: [R]."""
        if self.penalties:
            rows = torch.arange(start, start + len(tokens), device=tokens.device)
            self.seen[rows, tokens] = True
            self.counts[rows, tokens] += 1

    def process(self, logits: torch.Tensor, start: int = 0, uses: tuple | None = None) -> torch.Tensor:
        """Raw logits [R, V] of slots start..start+R-1 → processed logits (steps 1-7 of the module
        docstring). A one-row sampler also takes [T, V]: every position under that row's setting.
        `uses` (a fixed-shape step's, from `uses()`): apply exactly those processors, to every row (a
        neutral setting changes nothing), with no Python decision per row inside the step."""
        R = len(logits) if len(self.params) > 1 else 1
        rows = slice(start, start + R)
        logits = apply_logit_bias(logits.float(), None if self.bias is None else self.bias[rows])
        if self.penalties:
            logits = apply_repetition_penalty(logits, self.seen[rows], self.rep[rows])
            logits = apply_presence_frequency(
                logits, self.counts[rows], self.presence[rows], self.frequency[rows]
            )
        fixed = uses is not None
        greedy, top_k, top_p, min_p = uses if fixed else self.uses(rows)
        if greedy:
            return logits
        logits = apply_temperature(logits, self.temperature[rows])
        if top_k:
            logits = self._on_rows(
                apply_top_k, logits, self.top_k[rows], fixed or [p.top_k > 0 for p in self.params[rows]]
            )
        if top_p:
            logits = self._on_rows(
                apply_top_p, logits, self.top_p[rows], fixed or [p.top_p < 1 for p in self.params[rows]]
            )
        if min_p:
            logits = apply_min_p(logits, self.min_p[rows])
        return logits

    def _on_rows(
        self, fn, logits: torch.Tensor, setting: torch.Tensor, uses: list[bool] | bool
    ) -> torch.Tensor:
        """fn (top-k / top-p: a sort over the vocabulary each) on the rows that use it only; on all rows
        when `uses` is True (a fixed-shape step)."""
        if uses is True or all(uses) or len(logits) != len(uses):
            return fn(logits, setting)
        idx = torch.tensor([i for i, u in enumerate(uses) if u], device=logits.device)
        out = logits.clone()
        out[idx] = fn(logits[idx], setting[idx])
        return out

    def sample(self, logits: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Processed logits [R, V] of slots start.. → next tokens [R]: argmax for greedy rows, for the
        others the inverse CDF of softmax at each slot's next uniform (`uniforms`, `inverse_cdf`): one
        batched draw, whose value for a row depends on its key and draw count only."""
        greedy = logits.argmax(dim=-1)
        rows = slice(start, start + len(logits))
        if all(p.greedy for p in self.params[rows]):
            return greedy
        drawn = inverse_cdf(logits, self.next_uniforms(start, len(logits)))
        return torch.where(self.temperature[rows, 0] > 0, drawn, greedy)

    def next_uniforms(self, start: int, n: int) -> torch.Tensor:
        """The next uniform of each slot start..start+n−1 (float64 [n]); their draw counts advance."""
        rows = slice(start, start + n)
        u = uniforms(self.keys[rows], self.draws[rows])
        self.draws[rows] += 1
        return u

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution each row samples from after processing: one-hot at the argmax for greedy rows."""
        processed = self.process(logits)
        probs = processed.softmax(dim=-1)
        n = len(processed) if len(self.params) > 1 else 1
        greedy = torch.tensor([p.greedy for p in self.params[:n]], device=logits.device)
        if greedy.any():
            one_hot = torch.nn.functional.one_hot(processed.argmax(-1), logits.shape[-1]).to(probs.dtype)
            probs = torch.where(greedy[:, None], one_hot, probs)
        return probs


def token_logprobs(raw_logits: torch.Tensor, tokens: torch.Tensor, top_n: int = 0):
    """The model's log p(token) per row, and optionally the top-n (ids, logprobs) per row.

    raw_logits [B, V] are the logits before any processing: log p = z − logsumexp(z)."""
    logp = raw_logits.float().log_softmax(dim=-1)
    chosen = logp.gather(-1, tokens[:, None])[:, 0]
    if top_n <= 0:
        return chosen, None
    top = logp.topk(min(top_n, logp.shape[-1]), dim=-1)
    return chosen, (top.indices, top.values)


def chosen_logprobs(params: list[SamplingParams], logits, processed, chosen) -> list[tuple | None]:
    """Per row: (model log p, sampled-distribution log p, top-n) of the chosen token, for rows whose
    settings ask for log-probabilities (None for the others)."""
    want = [p.logprobs for p in params]
    if all(w is None for w in want):
        return [None] * len(params)
    logp = logits.float().log_softmax(-1)
    lp_model = logp.gather(-1, chosen[:, None])[:, 0].tolist()
    lp_sampled = processed.float().log_softmax(-1).gather(-1, chosen[:, None])[:, 0].tolist()
    out = []
    for i, (p, w) in enumerate(zip(params, want)):
        if w is None:
            out.append(None)
            continue
        sampled = 0.0 if p.greedy else lp_sampled[i]
        top = None
        if w > 0:
            t = logp[i].topk(min(w, logp.shape[-1]))
            top = list(zip(t.indices.tolist(), t.values.tolist()))
        out.append((lp_model[i], sampled, top))
    return out


def grown(sampler: BatchSampler, params: SamplingParams | None, capacity: int | None = None) -> BatchSampler:
    """A sampler with room for `params`' logit bias / penalties (or more slots), keeping every slot's state."""
    n = len(sampler.params)
    new = BatchSampler(
        [], sampler.V, sampler.device, capacity or n,
        bias=sampler.bias is not None or bool(params and params.logit_bias),
        penalties=sampler.penalties or bool(params and params.uses_penalties),
    )  # fmt: skip
    for b, (p, g) in enumerate(zip(sampler.params, sampler.generators)):
        new.assign(b, p)
        new.generators[b] = g
    new.keys[:n], new.draws[:n] = sampler.keys, sampler.draws
    if sampler.penalties:
        new.seen[:n], new.counts[:n] = sampler.seen, sampler.counts
    return new
