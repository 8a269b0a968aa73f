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
in a CUDA graph (see `compile=`).

Stop conditions per row: `max_new_tokens`, a stop token (end-of-turn/EOS: never part of the output),
or a stop string found in the decoded text, also when it spans several tokens (the text is cut
before it). Streaming yields text deltas that never split a UTF-8 character and never show the
beginning of what may turn out to be a stop string.

Lower-level API (serving, agents and RL rollouts use it directly):

    engine = Engine(model, tok)
    outs = engine.generate_ids([[1, 2, 3], [4, 5]], [SamplingParams(temperature=0), SamplingParams(seed=1)])
    outs[0].token_ids, outs[0].logprobs, outs[0].finish_reason, outs[0].text
    for events in engine.stream_ids(prompts, params): ...      # per step: list[StepEvent]
"""

from __future__ import annotations

import codecs
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.generate.sampling import BatchSampler, SamplingParams, token_logprobs
from llmlab.model.kv_cache import KVCache

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


class TextTracker:
    """Incremental detokenisation for one row: bytes → text without splitting UTF-8 characters, stop
    strings searched across token boundaries, and streaming that holds back any suffix that could
    still grow into a stop string."""

    def __init__(self, tok, stop: Sequence[str]):
        self.tok = tok
        self.stop = list(stop)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0  # characters of `text` already streamed
        self.hit: str | None = None

    def push(self, token_id: int) -> None:
        before = len(self.text)
        self.text += self.utf8.decode(self.tok.decode_bytes([token_id]))
        if self.stop:
            # Only a match ending in the new characters can be new; start max_len - 1 chars earlier.
            start = max(0, before - max(len(s) for s in self.stop) + 1)
            cut = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
            if cut:
                i, s = min(cut)
                self.text, self.hit = self.text[:i], s

    def finish(self) -> None:
        if self.hit is None:
            self.text += self.utf8.decode(b"", final=True)

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


class Engine:
    """Batched KV-cache decoding for one model.

    static: use the fixed-shape decode step (`StaticStep`: attend over the whole cache under a mask,
            sampling included), captured in one CUDA graph on CUDA. Default: on for CUDA, off on CPU
            (where the plain step that attends only to the filled slots is faster).
    compile: `torch.compile` the static step (implies static=True). On CUDA before capturing it (minutes
             to start). On CPU with inductor's C++ GEMM template on frozen weights (`compile_step`):
             2.6x the eager engine's tokens/s at batch 1 and 2.2x at batch 8 for the `small` preset
             (benchmarks/decode.py), after a compile of 30-50 s per process and batch size (frozen
             graphs are not cached on disk; new prompt lengths do not recompile). Worth it for long
             generations, chats and servers, not for one short answer; off by default."""

    def __init__(
        self,
        model,
        tok=None,
        *,
        stop_token_ids: Sequence[int] | None = None,
        static: bool | None = None,
        compile: bool = False,
    ):
        self.model = model.eval()
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

    @torch.inference_mode()
    def _run(self, prompts, params, completions: list[Completion] | None):
        prompts = [list(p) for p in prompts]
        B = len(prompts)
        if isinstance(params, SamplingParams):
            params = [params] * B
        params = [p.validate() for p in params]
        if len(params) != B:
            raise ValueError(f"{len(params)} sampling settings for {B} prompts")
        if any(not p for p in prompts):
            raise UserError("empty prompt; give at least one token")
        ctx, dev = self.cfg.context, self.device
        lengths = [len(p) for p in prompts]
        if max(lengths) > ctx:
            raise UserError(f"prompt of {max(lengths)} tokens exceeds the context window of {ctx}")
        # A row never feeds a position ≥ ctx: the i-th new token is read off position n − 1 + i.
        budget = [min(p.max_new_tokens, ctx - n + 1) for p, n in zip(params, lengths)]
        P = max(lengths)
        n_steps = max(budget)
        pad = torch.tensor([P - n for n in lengths], device=dev)

        comps = [Completion(prompt_ids=p) for p in prompts]
        if completions is not None:
            completions.extend(comps)
        for c, p in zip(comps, params):
            if p.logprobs is not None:
                c.logprobs = []
                c.top_logprobs = [] if p.logprobs > 0 else None
        stop_ids = [
            set(p.stop_token_ids if p.stop_token_ids is not None else self.stop_token_ids) for p in params
        ]
        texts = [TextTracker(self.tok, p.stop) if self.tok is not None else None for p in params]
        if any(p.stop for p in params) and self.tok is None:
            raise UserError("stop strings need a tokenizer")
        done = [b <= 0 for b in budget]
        for b in range(B):
            if done[b]:
                comps[b].finish_reason = "length"
        if all(done):
            return

        sampler = BatchSampler(params, self.cfg.vocab_size, dev)
        for b, p in enumerate(prompts):
            sampler.observe_prompt(b, p)

        cache = KVCache(self.cfg, B, max_len=P + n_steps, device=dev, dtype=self.dtype)
        slots = torch.arange(P + n_steps, device=dev)
        key_ok = slots[None, :] >= pad[:, None]  # [B, S]: real (non-padding) slots of each row

        # Prefill: left-padded prompts, per-row positions, causal ∧ real keys (∨ self for padding).
        ids = torch.zeros(B, P, dtype=torch.long, device=dev)
        for b, p in enumerate(prompts):
            ids[b, P - len(p) :] = torch.tensor(p, device=dev)
        ragged = min(lengths) != P
        if ragged:
            positions = (slots[None, :P] - pad[:, None]).clamp(min=0)
            causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
            mask = (causal[None] & key_ok[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=dev)[None]
            logits = self.model(ids, positions=positions, attn_mask=mask[:, None], cache=cache, cache_pos=0)
        else:  # no padding: plain causal prefill, and decode steps need neither mask nor positions
            logits = self.model(ids, cache=cache, cache_pos=0)
        logits = logits[:, -1]
        next_tok = sampler.sample(sampler.process(logits))
        step = (
            StaticStep(
                self.model, sampler, cache, pad, graph=self.device.type == "cuda", compile=self.compile
            )
            if self.static and n_steps > 1
            else None
        )

        for t in range(n_steps):
            sampler.observe(next_tok)
            want_lp = [b for b in range(B) if params[b].logprobs is not None and not done[b]]
            if want_lp:
                top_n = max(params[b].logprobs for b in want_lp)
                chosen, top = token_logprobs(logits, next_tok, top_n)
            events = []
            toks = next_tok.tolist()
            for b in range(B):
                if done[b]:
                    continue
                c, tid = comps[b], toks[b]
                if tid in stop_ids[b]:
                    done[b], c.finish_reason, c.stop_reason = True, "stop", tid
                    events.append(self._finish_event(b, None, texts[b], "stop"))
                    continue
                c.token_ids.append(tid)
                if c.logprobs is not None:
                    c.logprobs.append(float(chosen[b]))
                    if c.top_logprobs is not None:
                        n = params[b].logprobs
                        c.top_logprobs.append(list(zip(top[0][b, :n].tolist(), top[1][b, :n].tolist())))
                tr = texts[b]
                if tr is not None:
                    tr.push(tid)
                    if tr.hit is not None:
                        done[b], c.finish_reason, c.stop_reason = True, "stop", tr.hit
                if not done[b] and len(c.token_ids) >= budget[b]:
                    done[b], c.finish_reason = True, "length"
                if done[b]:
                    events.append(self._finish_event(b, tid, tr, c.finish_reason))
                else:
                    events.append(StepEvent(b, tid, tr.delta(final=False) if tr else "", False))
            yield events
            if all(done) or t == n_steps - 1:
                break
            pos = P + t
            if step is not None:
                logits, next_tok = step(next_tok, pos)
            else:
                logits = self._decode_step(
                    next_tok,
                    pos - pad if ragged else None,
                    key_ok[:, : pos + 1] if ragged else None,
                    cache,
                    pos,
                )
                next_tok = sampler.sample(sampler.process(logits))
        for b in range(B):
            if texts[b] is not None:
                comps[b].text = texts[b].text

    def _finish_event(self, b: int, tid: int | None, tr: TextTracker | None, reason: str) -> StepEvent:
        if tr is None:
            return StepEvent(b, tid, "", True, reason)
        tr.finish()
        return StepEvent(b, tid, tr.delta(final=True), True, reason)

    def _decode_step(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None,
        key_ok: torch.Tensor | None,
        cache: KVCache,
        pos: int,
    ) -> torch.Tensor:
        """One token per row at cache slot `pos`: logits [B, V] for the next one. Without padding
        (positions/key_ok None) a single query may attend to every filled slot: no mask needed."""
        if positions is None:
            return self.model(tokens[:, None], cache=cache, cache_pos=pos)[:, -1]
        return self.model(
            tokens[:, None],
            positions=positions[:, None],
            attn_mask=key_ok[:, None, None, :],
            cache=cache,
            cache_pos=pos,
        )[:, -1]


# Models whose weights a CPU-compiled step has frozen, with the weights' fingerprint at that time.
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_frozen_ever = 0  # models ever registered: fewer live ones means one died and its ids may be reused


def weights_fingerprint(model) -> tuple:
    """Changes whenever a weight is written in place (optimizer step, load_state_dict) or replaced."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def compile_step(fn, model, device: torch.device):
    """torch.compile for a decode step.

    CUDA: autotuned kernels without inductor's own CUDA graphs (we capture the whole step ourselves).
    CPU: inductor's C++ GEMM template (max-autotune, CPP backend) on frozen weights. At batch 1-16
    a decode step is matrix-vector work bound by how fast the weights stream from memory; the BLAS
    call behind eager F.linear reaches ~8 GB/s on a 2-core Zen 4, the template on weights prepacked at
    compile time ~25 GB/s at batch 1 (the machine's read bandwidth is ~28 GB/s). Freezing makes the
    weights constants of the compiled graph, so a step compiled before the weights change would keep
    the old ones: when a model's weight fingerprint moved (or a frozen model died and its tensor ids
    may be reused), every compiled graph is dropped and the step compiles again."""
    if device.type == "cuda":
        return torch.compile(fn, mode="max-autotune-no-cudagraphs")
    global _frozen_ever
    fingerprint = weights_fingerprint(model)
    seen = _FROZEN.get(model)
    if (seen is not None and seen != fingerprint) or len(_FROZEN) < _frozen_ever:
        torch.compiler.reset()
        _FROZEN.clear()
        _frozen_ever = 0
    if model not in _FROZEN:
        _frozen_ever += 1
    _FROZEN[model] = fingerprint
    compiled = torch.compile(fn, options={"max_autotune": True, "max_autotune_gemm_backends": "CPP"})

    import torch._inductor.config as inductor_config  # slow to import: only when compiling on CPU

    warm, eager = False, False

    def frozen(*args):
        # `freezing` is read when the graph compiles (first call), and torch.compile's options= does
        # not pass it through, hence the patch around each call. After the first call of this step
        # nothing its guards check can change (same model, batch, cache, weights: see above), so later
        # calls skip evaluating them, which saved ~0.35 ms a step (~6% at batch 1, torch.profiler).
        nonlocal warm, eager
        if eager:
            return fn(*args)
        try:
            with inductor_config.patch(freezing=True), torch.compiler.set_stance(skip_guard_eval_unsafe=warm):
                out = compiled(*args)
        except Exception as e:  # compilation fails before the step runs (e.g. no C++ compiler)
            if warm:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            warnings.warn(
                f"compiling the decode step failed ({type(e).__name__}: {first[:200]}); decoding eagerly",
                stacklevel=2,
            )
            eager = True
            return fn(*args)
        warm = True
        return out

    return frozen


class StaticStep:
    """One decode step with fixed shapes, sampling included, for CUDA-graph capture (gpt-fast style).

    Inputs live in static buffers (tokens [B], slot [1]); the step writes the new keys/values at `slot`
    with `index_copy_`, attends over the whole cache (CUDA graph) or its filled part (otherwise) under
    the mask pad_b ≤ s ≤ slot, processes the logits
    with the row settings and picks the next token: the argmax for greedy rows, otherwise
    argmax_v pᵥ / Eᵥ with Eᵥ ~ Exp(1), which is a draw from p (the exponential race, equivalent to the
    Gumbel-max trick). The Exp(1) noise is drawn outside the graph from each row's own generator, so rows
    stay seeded independently. With `graph=False` the same step runs eagerly (CPU, tests)."""

    def __init__(
        self,
        model,
        sampler: BatchSampler,
        cache: KVCache,
        pad: torch.Tensor,
        graph: bool,
        compile: bool = False,
    ):
        B, S = pad.shape[0], cache.max_len
        dev = pad.device
        self.model, self.sampler = model, sampler
        self.cache, self.pad = cache, pad
        self.tokens = torch.zeros(B, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.slots = torch.arange(S, device=dev)
        self.sampling = not sampler.all_greedy
        self.noise = torch.ones(B, model.cfg.vocab_size, device=dev)
        self.greedy_rows = torch.tensor([p.greedy for p in sampler.params], device=dev)
        if compile and not graph:
            # One graph for every cache length: the slot axis is symbolic (the GEMMs' shapes do not
            # depend on it), so a new prompt or max_new_tokens does not compile again.
            for t in [*cache.k, *cache.v]:
                torch._dynamo.maybe_mark_dynamic(t, 2)
        self.fn = compile_step(self._step, model, dev) if compile else self._step
        self.graph = None
        self.want_graph = graph

    def _step(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys: the cache slots to attend over, slots[:n]; the mask's width n tells the attention
        how much of the cache to read (all of it under a CUDA graph, the filled part otherwise)."""
        key_ok = (keys[None] >= self.pad[:, None]) & (keys[None] <= self.slot)  # [B, n]
        positions = (self.slot - self.pad)[:, None]
        logits = self.model(
            self.tokens[:, None],
            positions=positions,
            attn_mask=key_ok[:, None, None, :],
            cache=self.cache,
            cache_pos=self.slot,
        )[:, -1]
        z = self.sampler.process(logits)
        nxt = z.argmax(-1)
        if self.sampling:
            drawn = (z.softmax(-1) / self.noise).argmax(-1)
            nxt = torch.where(self.greedy_rows, nxt, drawn)
        return logits, nxt

    def _capture(self) -> None:
        """Warm up on a side stream (as CUDA graphs require), then record the step once."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fn(self.slots)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out_logits, self.out_tokens = self.fn(self.slots)

    def __call__(self, tokens: torch.Tensor, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.tokens.copy_(tokens)
        self.slot.fill_(slot)
        if self.sampling:
            for b, p in enumerate(self.sampler.params):
                if not p.greedy:
                    self.noise[b].exponential_(generator=self.sampler.generators[b])
        if not self.want_graph:
            keys = self.slots[: slot + 1]  # only the filled slots: less cache to read
            torch._dynamo.maybe_mark_dynamic(keys, 0)
            return self.fn(keys)
        if self.graph is None:
            self._capture()  # the warm-up ran this very step, and the replay below repeats it exactly
        self.graph.replay()
        return self.out_logits, self.out_tokens.clone()
