"""The decoding engine: a preallocated KV cache, one prefill, then one-token decode steps for a batch
of prompts of different lengths, each row with its own sampling settings and stop state.

Ragged prompts are left-padded so every row's prompt ends at the same cache slot P = max length:

    slot        0     1     2     3     4   | 5     6 ...      (P = 5)
    row 0       a     b     c     d     e   | new   new
    row 1       pad   pad   x     y     z   | new   new        pad₁ = 2

Row b's token in slot s has RoPE position s − pad_b (so its positions are 0, 1, 2, ... exactly as if
it ran alone) and may attend to slots pad_b ≤ s' ≤ s. Padding slots attend only to themselves, which
keeps their (unused) activations finite. One decode step then writes all rows at the same slot, so
the cache and the mask [B, 1, 1, S] keep fixed shapes: what makes the step compilable and capturable
in a CUDA graph (see `compile=` and generate/compiled.py). A row that has finished (or whose budget
is shorter) is still computed until the batch ends, its outputs ignored; its RoPE position is clamped
to the context, never past it.

Stop conditions per row: `max_new_tokens` (cut at the end of the context window: the i-th new token
of a prompt of n tokens is read off position n − 1 + i ≤ context − 1), a stop token (end-of-turn/EOS:
never part of the output), or a stop string found in the decoded text, also when it spans several
tokens (the text is cut before it). Streaming yields text deltas that never split a UTF-8 character
and never show the beginning of what may turn out to be a stop string.

Token ids in, ids + log-probabilities out:

    engine = Engine(model, tok)
    outs = engine.generate_ids([[1, 2, 3], [4, 5]], [SamplingParams(temperature=0), SamplingParams(seed=1)])
    outs[0].token_ids, outs[0].logprobs, outs[0].finish_reason, outs[0].text
    for events in engine.stream_ids(prompts, params): ...      # per step: list[StepEvent]

The engine never changes the caller's model: a model in training mode is put in eval mode (no dropout)
only around each forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.generate.compiled import StaticStep, compiled_step
from llmlab.generate.sampling import BatchSampler, SamplingParams, token_logprobs
from llmlab.model.kv_cache import KVCache
from llmlab.tokenizer.tokenizer import StreamDecoder

# Special tokens that end generation by default, when the tokenizer has them.
DEFAULT_STOP_TOKENS = ("<|end|>", "<|bos|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


@dataclass
class Completion:
    """One row's result. token_ids exclude the stop token; `text` is cut before a stop string."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] | None = None  # model log p of each chosen token
    top_logprobs: list[list[tuple[int, float]]] | None = None
    finish_reason: str | None = None  # "stop" (token or string) or "length"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it


@dataclass
class StepEvent:
    """What one decode step produced for one row (streaming)."""

    row: int
    token_id: int | None  # None when the row finished without a new output token (a stop token)
    text_delta: str
    finished: bool
    finish_reason: str | None = None


@contextmanager
def eval_mode(*models):
    """Run with every module of `models` in eval mode (no dropout), then restore each module's own mode:
    a no-op for models already in eval mode."""
    training = [m for model in models for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


class TextTracker:
    """Detokenisation for one row: `StreamDecoder` (bytes → text, never splitting a UTF-8 character),
    stop strings searched across token boundaries, and streaming that holds back any suffix that could
    still grow into a stop string."""

    def __init__(self, tok, stop: Sequence[str]):
        self.decoder = StreamDecoder(tok)
        self.stop = list(stop)
        self.text = ""
        self.emitted = 0  # characters of `text` already streamed
        self.hit: str | None = None

    def push(self, token_id: int) -> None:
        before = len(self.text)
        self.text += self.decoder.push(token_id)
        if self.stop:
            # Only a match ending in the new characters can be new; start max_len - 1 chars earlier.
            start = max(0, before - max(len(s) for s in self.stop) + 1)
            cut = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
            if cut:
                i, s = min(cut)
                self.text, self.hit = self.text[:i], s

    def finish(self) -> None:
        if self.hit is None:
            self.text += self.decoder.flush()

    def delta(self, final: bool) -> str:
        """New text safe to show: all of it when final, else minus a possible stop-string prefix."""
        end = len(self.text)
        if not final and self.stop:
            for s in self.stop:
                for k in range(min(len(s) - 1, end - self.emitted), 0, -1):
                    if self.text.endswith(s[:k]):
                        end = min(end, len(self.text) - k)
                        break
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out


def decode_until_stop(tok, token_ids: Sequence[int], stop: Sequence[str] = ()) -> str:
    """The text of `token_ids`, cut before the first stop string (for beam / speculative outputs)."""
    tracker = TextTracker(tok, stop)
    for t in token_ids:
        tracker.push(t)
        if tracker.hit is not None:
            return tracker.text
    tracker.finish()
    return tracker.text


def default_stop_token_ids(tok) -> list[int]:
    specials = getattr(tok, "special_tokens", None) or {}
    return [specials[s] for s in DEFAULT_STOP_TOKENS if s in specials]


@dataclass
class _Row:
    """One request's state while its batch runs."""

    index: int
    comp: Completion
    params: SamplingParams
    stop_ids: set[int]
    text: TextTracker | None
    budget: int  # new tokens allowed: max_new_tokens, cut at the end of the context window
    done: bool = False

    def accept(self, tid: int, chosen: torch.Tensor | None, top: tuple | None) -> StepEvent:
        """Record the token just chosen (with its log-probabilities) and check the stop conditions."""
        if tid in self.stop_ids:
            return self.finish(None, "stop", tid)
        c = self.comp
        c.token_ids.append(tid)
        if c.logprobs is not None:
            c.logprobs.append(float(chosen[self.index]))
            if c.top_logprobs is not None:
                n = self.params.logprobs
                c.top_logprobs.append(
                    list(zip(top[0][self.index, :n].tolist(), top[1][self.index, :n].tolist()))
                )
        if self.text is not None:
            self.text.push(tid)
            if self.text.hit is not None:
                return self.finish(tid, "stop", self.text.hit)
        if len(c.token_ids) >= self.budget:
            return self.finish(tid, "length")
        return StepEvent(self.index, tid, self.text.delta(final=False) if self.text else "", False)

    def finish(self, tid: int | None, reason: str, stop_reason: int | str | None = None) -> StepEvent:
        self.done = True
        self.comp.finish_reason, self.comp.stop_reason = reason, stop_reason
        if self.text is None:
            return StepEvent(self.index, tid, "", True, reason)
        self.text.finish()
        self.comp.text = self.text.text
        return StepEvent(self.index, tid, self.text.delta(final=True), True, reason)


class Engine:
    """Batched KV-cache decoding for one model.

    static: use the fixed-shape decode step (`StaticStep`: attend over the whole cache under a mask,
            sampling included), captured in one CUDA graph on CUDA. Default: on for CUDA, off on CPU
            (where the plain step that attends only to the filled slots is faster).
    compile: `torch.compile` the static step (implies static=True). On CUDA before capturing it (minutes
             to start). On CPU with inductor's C++ GEMM template on frozen weights
             (generate/compiled.py), after a compile of tens of seconds per process and batch size
             (docs/decoding.md#performance has the speed-up and the compile time of one run). The
             compiled step belongs to the model and is reused by its later engines while its weights
             stay the same (new prompt lengths do not recompile). Worth it for long generations and
             chats, not for one short answer; off by default."""

    def __init__(
        self,
        model,
        tok=None,
        *,
        stop_token_ids: Sequence[int] | None = None,
        static: bool | None = None,
        compile: bool = False,
    ):
        self.model = model
        self.cfg = model.cfg
        self.tok = tok
        self.stop_token_ids = (
            list(stop_token_ids)
            if stop_token_ids is not None
            else (default_stop_token_ids(tok) if tok is not None else [])
        )
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.compile = compile
        self.static = compile or ((self.device.type == "cuda") if static is None else static)

    # ---- prompts --------------------------------------------------------------------------------
    def encode(
        self, prompt: str | Sequence[int], truncate: bool = False, max_new_tokens: int = 0
    ) -> list[int]:
        """Text (special tokens allowed) or ids → ids, checked against the context window."""
        if isinstance(prompt, str):
            if self.tok is None:
                raise UserError("this model has no tokenizer; pass token ids instead of text")
            ids = list(self.tok.encode(prompt, allowed_special="all"))
        else:
            ids = [int(i) for i in prompt]
        ctx = self.cfg.context
        if any(not 0 <= i < self.cfg.vocab_size for i in ids):
            raise UserError(f"prompt has token ids outside the vocabulary [0, {self.cfg.vocab_size})")
        if len(ids) > ctx:
            if not truncate:
                raise UserError(
                    f"prompt is {len(ids)} tokens but the context window is {ctx}; shorten it "
                    "or pass --truncate to keep its last tokens"
                )
            ids = ids[-max(ctx // 2, ctx - max_new_tokens) :]  # room for the answer, half the window at least
        if not ids:
            raise UserError("empty prompt; give at least one token (e.g. start with <|bos|>)")
        return ids

    # ---- the core loop --------------------------------------------------------------------------
    def stream_ids(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> Iterator[list[StepEvent]]:
        """Yield, after every step, the events of the rows that advanced. See `generate_ids`."""
        yield from self._run(prompts, params, completions=None)

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[Completion]:
        """Token ids in, `Completion`s out (ids, text, log-probabilities, finish reason), one per prompt."""
        completions: list[Completion] = []
        for _ in self._run(prompts, params, completions=completions):
            pass
        return completions

    def _rows(self, prompts: list[list[int]], params) -> list[_Row]:
        """Check the requests and set up their state (completion, stops, text, budget)."""
        B, ctx = len(prompts), self.cfg.context
        if isinstance(params, SamplingParams):
            params = [params] * B
        params = [p.validate() for p in params]
        if len(params) != B:
            raise ValueError(f"{len(params)} sampling settings for {B} prompts")
        if any(not p for p in prompts):
            raise UserError("empty prompt; give at least one token")
        if max(len(p) for p in prompts) > ctx:
            raise UserError(
                f"prompt of {max(len(p) for p in prompts)} tokens exceeds the context window of {ctx}"
            )
        if any(p.stop for p in params) and self.tok is None:
            raise UserError("stop strings need a tokenizer")
        rows = []
        for b, (ids, p) in enumerate(zip(prompts, params)):
            comp = Completion(prompt_ids=ids)
            if p.logprobs is not None:
                comp.logprobs = []
                comp.top_logprobs = [] if p.logprobs > 0 else None
            stops = set(p.stop_token_ids if p.stop_token_ids is not None else self.stop_token_ids)
            text = TextTracker(self.tok, p.stop) if self.tok is not None else None
            # The i-th new token is read off position n − 1 + i, which must stay below the context.
            rows.append(_Row(b, comp, p, stops, text, budget=min(p.max_new_tokens, ctx - len(ids) + 1)))
        for r in rows:
            if r.budget <= 0:
                r.done, r.comp.finish_reason = True, "length"
        return rows

    @torch.inference_mode()
    def _run(self, prompts, params, completions: list[Completion] | None):
        prompts = [list(p) for p in prompts]
        rows = self._rows(prompts, params)
        if completions is not None:
            completions.extend(r.comp for r in rows)
        if all(r.done for r in rows):
            return
        B, dev = len(prompts), self.device
        lengths = [len(p) for p in prompts]
        P, n_steps = max(lengths), max(r.budget for r in rows)
        pad = torch.tensor([P - n for n in lengths], device=dev)

        sampler = BatchSampler([r.params for r in rows], self.cfg.vocab_size, dev)
        for b, p in enumerate(prompts):
            sampler.observe_prompt(b, p)
        cache = KVCache(self.cfg, B, max_len=P + n_steps, device=dev, dtype=self.dtype)
        with eval_mode(self.model):
            logits = self._prefill(prompts, pad, cache)
        next_tok = sampler.sample(sampler.process(logits))
        decode = self._decoder(sampler, cache, pad, ragged=min(lengths) != P) if n_steps > 1 else None

        for t in range(n_steps):
            sampler.observe(next_tok)
            live = [r for r in rows if not r.done]
            chosen = top = None
            want_lp = [r.params.logprobs for r in live if r.params.logprobs is not None]
            if want_lp:
                chosen, top = token_logprobs(logits, next_tok, max(want_lp))
            toks = next_tok.tolist()
            yield [r.accept(toks[r.index], chosen, top) for r in live]
            if all(r.done for r in rows) or t == n_steps - 1:
                break
            with eval_mode(self.model):
                logits, next_tok = decode(next_tok, P + t)

    def _prefill(self, prompts: list[list[int]], pad: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """All prompts at once, left-padded: logits [B, V] for each row's first new token. Per-row positions
        and the mask causal ∧ real keys (∨ self for padding slots); no mask when nothing is padded."""
        B, P, dev = len(prompts), max(len(p) for p in prompts), self.device
        ids = torch.zeros(B, P, dtype=torch.long, device=dev)
        for b, p in enumerate(prompts):
            ids[b, P - len(p) :] = torch.tensor(p, device=dev)
        if not bool(pad.any()):
            return self.model(ids, cache=cache, cache_pos=0)[:, -1]
        slots = torch.arange(P, device=dev)
        positions = (slots[None, :] - pad[:, None]).clamp(min=0)
        key_ok = slots[None, :] >= pad[:, None]
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & key_ok[:, None, :]) | torch.eye(P, dtype=torch.bool, device=dev)[None]
        return self.model(ids, positions=positions, attn_mask=mask[:, None], cache=cache, cache_pos=0)[:, -1]

    def _decoder(self, sampler: BatchSampler, cache: KVCache, pad: torch.Tensor, ragged: bool):
        """The decode step: (tokens [B], slot) → (logits [B, V], next tokens [B])."""
        if self.static:
            compiled = compiled_step(self.model, self.device) if self.compile else None
            return StaticStep(
                self.model, sampler, cache, pad, graph=self.device.type == "cuda", compiled=compiled
            )
        slots = torch.arange(cache.max_len, device=self.device)
        key_ok = slots[None, :] >= pad[:, None]  # [B, S]: real (non-padding) slots of each row
        last_position = self.cfg.context - 1

        def step(tokens: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
            if not ragged:  # one query may attend to every filled slot: no mask, default positions
                logits = self.model(tokens[:, None], cache=cache, cache_pos=pos)[:, -1]
            else:
                # A finished row is still computed; clamped, its position never passes the context.
                positions = (pos - pad).clamp(max=last_position)
                logits = self.model(
                    tokens[:, None],
                    positions=positions[:, None],
                    attn_mask=key_ok[:, None, None, : pos + 1],
                    cache=cache,
                    cache_pos=pos,
                )[:, -1]
            return logits, sampler.sample(sampler.process(logits))

        return step
