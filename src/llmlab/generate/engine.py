"""The decoding engine: a scheduler that runs many requests at once over one KV cache.

    waiting ──(a free slot for each of its n samples)──► prefill ──► running ──► finished / aborted
                                                         (chunked)   one decode step for every running row

Every row (one sample of one request) has its own cache slot and its own length, so rows of any
lengths decode together: the step feeds each row's last token at its own position pos[b] and lets
it attend to slots 0..pos[b]. Running rows are kept in slots 0..R-1 (a finished row's slot is filled
by the last running row, one copy of its cache), so a decode step works on R rows only — finished
rows never compute again — and a batch-size bucket of fixed shape (1, 2, 4, 8, ...) when the step is
compiled or captured in a CUDA graph (padding rows sit at position 0, their outputs ignored).

A waiting request is admitted when there is a slot for each of its n samples. Its prompt is prefilled
in a staging slot, at most `prefill_chunk` tokens per engine step (so a long prompt does not stall the
running rows for long); then its cache is copied into the n slots, one per sample, each sampling with
its own generator (seed + i): n samples share one prefill. Memory: every slot holds `max_len` positions
(the context by default) — a fixed slot per row, not a paged cache (docs/decoding.md says why).

    engine = Engine(model, tok, max_batch=32)
    rid = engine.add_request(prompt_ids, SamplingParams(temperature=0.7, seed=1), n=4, on_tool_call=None)
    while engine.has_unfinished():
        for ev in engine.step():             # RequestEvent(request_id, index, token_id, text_delta, ...)
            ...
    engine.abort(rid); engine.force(rid, ids, index=0)

Forced tokens are read as if the row had written them (`force`), marked `forced=True`. A tool call:
when a row writes `<|/tool_call|>`, `on_tool_call(request_id, index, call_text)` runs; a string result
is forced into the row as the template's tool turn, `<|end|><|tool|>name<|tool_result|>…<|/tool_result|>
<|end|><|assistant|>`, and the row goes on writing the answer (a callback that raises gives a tool
error result). Log-probabilities: see `Completion`. `generate_ids` / `stream_ids` are loops over
`add_request` and `step`; the engine never changes the caller's model (its mode, its compiled graphs).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from llmlab.errors import UserError
from llmlab.generate.compiled import StaticStep, compiled_step
from llmlab.generate.rows import (
    Completion,
    Request,
    RequestEvent,
    Row,
    TextTracker,
    default_stop_token_ids,
    eval_mode,
)
from llmlab.generate.sampling import BatchSampler, SamplingParams, chosen_logprobs, grown
from llmlab.model.kv_cache import KVCache


def bucket(n: int, cap: int) -> int:
    """The smallest power of two ≥ n, at most `cap`: the batch sizes a fixed-shape step is built for."""
    b = 1
    while b < n:
        b *= 2
    return min(b, cap)


class Engine:
    """Continuous-batching decoding for one model.

    max_batch: rows decoding at once (a request of n samples takes n). max_len: cache positions per
            row (default: the context; `generate_ids` sizes a fresh engine to its prompts).
    prefill_chunk: prompt tokens prefilled per step. dtype: decode in this dtype (e.g. torch.bfloat16
            on a CPU with avx512_bf16: weights stream twice as fast) from a converted copy of the model.
    static: fixed-shape decode steps per batch-size bucket (`StaticStep`), captured in CUDA graphs on
            CUDA (once per engine and bucket). Default: on for CUDA, off on CPU.
    compile: `torch.compile` the static step (implies static=True); see generate/compiled.py and
            docs/decoding.md#performance for its cost (one compile per bucket) and gain."""

    def __init__(
        self,
        model,
        tok=None,
        *,
        max_batch: int = 32,
        max_len: int | None = None,
        prefill_chunk: int = 256,
        stop_token_ids: Sequence[int] | None = None,
        static: bool | None = None,
        compile: bool = False,
        dtype: torch.dtype | None = None,
    ):
        if max_batch < 1:
            raise UserError(f"max_batch must be >= 1, got {max_batch}")
        if prefill_chunk < 1:
            raise UserError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        p = next(model.parameters())
        if dtype is not None and dtype != p.dtype:
            model = _converted(model, dtype)
        self.model, self.cfg, self.tok = model, model.cfg, tok
        self.device, self.dtype = p.device, dtype or p.dtype
        self.stop_token_ids = (
            list(stop_token_ids) if stop_token_ids is not None else default_stop_token_ids(tok)
        )
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.max_len = min(max_len or self.cfg.context, self.cfg.context)
        self.batch_limit, self.auto_size = max_batch, max_len is None  # generate_ids may size the cache
        self.compile = compile
        self.static = compile or ((self.device.type == "cuda") if static is None else static)
        self.waiting: deque[Request] = deque()
        self.prefilling: Request | None = None
        self.running: list[Row] = []  # running[i] sits in cache slot i
        self.requests: dict[int, Request] = {}
        self.next_id = 0
        self.cache: KVCache | None = None
        self.steps: dict[tuple, StaticStep] = {}
        self.step_widths: list[int] = []  # rows per decode step (benchmarks read it)
        self.sampler = BatchSampler([], self.cfg.vocab_size, self.device, max_batch + 1)

    # ---- requests -------------------------------------------------------------------------------
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
        if len(ids) > ctx and truncate:
            ids = ids[-max(ctx // 2, ctx - max_new_tokens) :]  # room for the answer, half the window at least
        self._check_prompt(ids)
        return ids

    def _check_prompt(self, ids: Sequence[int]) -> None:
        if not ids:
            raise UserError("empty prompt; give at least one token (e.g. start with <|bos|>)")
        if any(not 0 <= i < self.cfg.vocab_size for i in ids):
            raise UserError(f"prompt has token ids outside the vocabulary [0, {self.cfg.vocab_size})")
        if len(ids) > self.max_len:
            raise UserError(
                f"prompt is {len(ids)} tokens but the context window is {self.max_len}; shorten it "
                "or pass --truncate to keep its last tokens"
            )

    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        n: int = 1,
        on_tool_call: Callable[[int, int, str], str | None] | None = None,
    ) -> int:
        """Queue a prompt for n samples; returns its request id. It starts at a later `step`."""
        return self._submit(prompt_ids, params, n, on_tool_call).id

    def _submit(self, prompt_ids, params, n, on_tool_call) -> Request:
        params = (params or SamplingParams()).validate()
        prompt = [int(i) for i in prompt_ids]
        self._check_prompt(prompt)
        if not 1 <= n <= self.max_batch:
            raise UserError(f"n must be in [1, max_batch={self.max_batch}], got {n}")
        if params.stop and self.tok is None:
            raise UserError("stop strings need a tokenizer")
        if on_tool_call is not None and not self._tool_tokens():
            raise UserError(
                "on_tool_call: this model's tokenizer has no tool-call tokens (<|tool_call|> ...)"
            )
        if (params.logit_bias and self.sampler.bias is None) or (
            params.uses_penalties and not self.sampler.penalties
        ):
            self.sampler = grown(self.sampler, params)
            self.steps.clear()  # fixed-shape steps hold the old sampler
        req = Request(self.next_id, prompt, params, n, on_tool_call)
        req.prompt_logprobs = [None] if params.echo else None
        self.next_id += 1
        self.requests[req.id] = req
        self.waiting.append(req)
        return req

    @torch.inference_mode()  # compaction writes the cache, an inference tensor
    def abort(self, request_id: int) -> None:
        """Drop a request now (a client that went away): its slots are free for the next step."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        if req in self.waiting:
            self.waiting.remove(req)
        if self.prefilling is req:
            self.prefilling = None
        for row in req.rows:
            if not row.done:
                row.finish(None, "abort")
        self._remove_finished()

    def force(self, request_id: int, ids: Sequence[int], index: int = 0) -> None:
        """Tokens row `index` of a running request reads next, as if it had written them (forced=True)."""
        req = self.requests.get(request_id)
        rows = [r for r in (req.rows if req else []) if r.index == index and not r.done]
        if not rows:
            raise UserError(f"request {request_id} has no running sample {index}")
        if any(not 0 <= int(i) < self.cfg.vocab_size for i in ids):
            raise UserError(f"forced token ids must be in [0, {self.cfg.vocab_size})")
        rows[0].forced.extend(int(i) for i in ids)

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes the KV cache holds (every slot at max_len positions: a fixed slot per row)."""
        return self.cache.nbytes() if self.cache is not None else 0

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    # ---- one step -------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[RequestEvent]:
        """Admit and prefill waiting requests (up to prefill_chunk prompt tokens), then one decode step
        for every running row. Returns what each row produced."""
        events: list[RequestEvent] = []
        if self.cache is None:
            self._allocate(self.max_batch, self.max_len)
        # A model in eval mode needs no switching (walking every module each step costs ~4% at batch 8).
        with eval_mode(self.model) if self.model.training else contextlib.nullcontext():
            self._prefill(events)
            if self.running:
                self._decode(events)
        return events

    def _allocate(self, rows: int, max_len: int) -> None:
        """The caches: `rows` decode slots, and one staging slot for prefill; `max_len` positions each."""
        self.max_batch, self.max_len = rows, max_len
        # One spare position: a step's mask (the filled slots) is then always narrower than the cache,
        # so a compiled step keeps one graph for every length. The staging slot is a cache of its own,
        # so the decode steps' cache is exactly the decode rows.
        kw = dict(max_len=max_len + 1, device=self.device, dtype=self.dtype)
        self.cache = KVCache(self.cfg, rows, **kw)
        self.staging = KVCache(self.cfg, 1, **kw)
        self.steps.clear()
        if len(self.sampler.params) < rows + 1:
            self.sampler = grown(self.sampler, None, rows + 1)

    def _prefill(self, events: list[RequestEvent]) -> None:
        budget = self.prefill_chunk
        while budget > 0:
            if self.prefilling is None:
                if not self.waiting or len(self.running) + self.waiting[0].n > self.max_batch:
                    return
                self.prefilling = self.waiting.popleft()
            req = self.prefilling
            take = min(budget, len(req.prompt) - req.prefilled)
            chunk = torch.tensor([req.prompt[req.prefilled : req.prefilled + take]], device=self.device)
            last_only = req.prompt_logprobs is None  # echo needs every position's logits
            logits = self.model(chunk, cache=self.staging, cache_pos=req.prefilled, last_only=last_only)[0]
            if req.prompt_logprobs is not None:
                targets = torch.tensor(
                    req.prompt[req.prefilled + 1 : req.prefilled + take + 1], device=self.device
                )
                logp = logits[: len(targets)].float().log_softmax(-1)  # position j predicts prompt[j + 1]
                req.prompt_logprobs += logp.gather(-1, targets[:, None])[:, 0].tolist()
            req.prefilled += take
            budget -= take
            if req.prefilled == len(req.prompt):
                self.prefilling = None
                self._start_rows(req, logits[-1], events)

    def _start_rows(self, req: Request, logits: torch.Tensor, events: list[RequestEvent]) -> None:
        """The prompt is in the staging slot: give each sample a slot, a generator, its first token."""
        R, L, p = len(self.running), len(req.prompt), req.params
        stops = set(p.stop_token_ids if p.stop_token_ids is not None else self.stop_token_ids)
        for i in range(req.n):
            comp = Completion(prompt_ids=req.prompt, request_id=req.id, index=i)
            comp.prompt_logprobs = req.prompt_logprobs
            if p.logprobs is not None:
                comp.logprobs, comp.sample_logprobs = [], []
                comp.top_logprobs = [] if p.logprobs > 0 else None
            text = TextTracker(self.tok, p.stop) if self.tok is not None else None
            row = Row(req, i, comp, stops, text, p.max_new_tokens, length=L, slot=R + i)
            self.cache.copy_row(0, row.slot, L, source=self.staging)
            self.sampler.assign(row.slot, p, seed_offset=i)
            self.sampler.observe_prompt(row.slot, req.prompt)
            req.rows.append(row)
            self.running.append(row)
        if p.max_new_tokens == 0:
            for row in req.rows:
                events.append(row.finish(None, "length"))
        else:
            self._advance(req.rows, logits[None].expand(req.n, -1), None, R, events)
        self._remove_finished()

    def _decode(self, events: list[RequestEvent]) -> None:
        rows = list(self.running)
        R = len(rows)
        self.step_widths.append(R)
        tokens = torch.tensor([r.last for r in rows], device=self.device)
        pos = torch.tensor([r.length for r in rows], device=self.device)
        chosen = None
        if self.static:
            logits, chosen = self._static_step(R)(tokens, pos)
        elif len({r.length for r in rows}) == 1:  # one length (a batch that started together): one slot
            logits = self.model(tokens[:, None], cache=self.cache.rows(0, R), cache_pos=rows[0].length)[:, -1]
        else:
            key_ok = torch.arange(int(pos.max()) + 1, device=self.device)[None] <= pos[:, None]
            logits = self.model(
                tokens[:, None], positions=pos[:, None], attn_mask=key_ok[:, None, None, :],
                cache=self.cache.rows(0, R), cache_pos=pos,
            )[:, -1]  # fmt: skip
        for r in rows:
            r.length += 1  # its last token is in the cache now
        self._advance(rows, logits, chosen, 0, events)
        self._remove_finished()

    def _static_step(self, R: int) -> StaticStep:
        """The fixed-shape step for R rows: its batch-size bucket and the processors those rows use (free
        slots hold neutral settings), built once per engine (a CUDA graph each, on CUDA)."""
        B = bucket(R, self.max_batch)
        uses = self.sampler.uses(slice(0, B))
        if (B, uses) not in self.steps:
            compiled = compiled_step(self.model, self.device) if self.compile else None
            graph = self.device.type == "cuda"
            view = self.cache.rows(0, B)
            self.steps[B, uses] = StaticStep(self.model, self.sampler, view, graph, compiled, uses)
        return self.steps[B, uses]

    def _advance(self, rows: list[Row], logits, chosen, start: int, events: list[RequestEvent]) -> None:
        """Rows in slots start..: pick each one's next token (sampled, or its next forced one), record
        log-probabilities, check stops and tool calls."""
        processed = None
        if chosen is None or any(r.request.params.logprobs is not None for r in rows):
            processed = self.sampler.process(logits, start=start)
        if chosen is None:
            chosen = self.sampler.sample(processed, start=start)
        forced = [bool(r.forced) for r in rows]
        if any(forced):
            chosen = chosen.clone()
            for i, r in enumerate(rows):
                if forced[i]:
                    chosen[i] = r.forced.popleft()
        self.sampler.observe(chosen, start=start)
        lps = chosen_logprobs([r.request.params for r in rows], logits, processed, chosen)
        for i, (r, tid) in enumerate(zip(rows, chosen.tolist())):
            events.append(r.accept(tid, forced[i], self.max_len, lps[i]))
            if (
                not r.done
                and not forced[i]
                and r.request.on_tool_call is not None
                and tid == self._tool_tokens()[1]
            ):
                self._tool_call(r)

    def _remove_finished(self) -> None:
        """Free the slots of finished rows: the last running row moves into each (cache, sampler)."""
        for i in range(len(self.running) - 1, -1, -1):
            row = self.running[i]
            if not row.done:
                continue
            last = self.running.pop()
            vacated = last.slot
            if last is not row:
                self.cache.copy_row(last.slot, row.slot, last.length)
                self.sampler.move(last.slot, row.slot)
                last.slot = row.slot
                self.running[i] = last
            self.sampler.clear(vacated)
        for req in [q for q in self.requests.values() if q.rows and all(r.done for r in q.rows)]:
            del self.requests[req.id]

    # ---- tool calls -----------------------------------------------------------------------------
    def _tool_tokens(self) -> tuple[int, ...]:
        specials = getattr(self.tok, "special_tokens", None) or {}
        names = (
            "<|tool_call|>",
            "<|/tool_call|>",
            "<|end|>",
            "<|tool|>",
            "<|tool_result|>",
            "<|/tool_result|>",
            "<|assistant|>",
        )
        return tuple(specials[s] for s in names) if all(s in specials for s in names) else ()

    def _tool_call(self, row: Row) -> None:
        """The row closed a tool call: run the callback and force its result in as the tool's turn."""
        start, _, end, tool, result_open, result_close, assistant = self._tool_tokens()
        ids = row.comp.prompt_ids + row.comp.token_ids  # the call may open in the prompt
        opened = max((i for i, t in enumerate(ids) if t == start), default=-1)
        call_text = self.tok.decode(ids[opened + 1 : -1])
        try:
            result = row.request.on_tool_call(row.request.id, row.index, call_text)
        except Exception as e:  # a tool's failure is the model's to read, not the engine's crash
            result = json.dumps({"error": f"{type(e).__name__}: {e}"})
        if result is None:
            return
        try:
            name = str(json.loads(call_text).get("name", ""))
        except (json.JSONDecodeError, AttributeError):
            name = ""
        enc = self.tok.encode_ordinary
        row.forced.extend(
            [end, tool, *enc(name), result_open, *enc(str(result)), result_close, end, assistant]
        )

    # ---- loops over add_request / step ------------------------------------------------------------
    def stream_ids(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> Iterator[list[RequestEvent]]:
        """Yield each step's events for these prompts (their request ids are consecutive, in prompt order)."""
        yield from self._run(self._submit_all(prompts, params))

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[Completion]:
        """Token ids in, `Completion`s out (ids, text, log-probabilities, finish reason), one per prompt."""
        reqs = self._submit_all(prompts, params)
        for _ in self._run(reqs):
            pass
        return [q.rows[0].comp for q in reqs]

    def _run(self, reqs: list[Request]) -> Iterator[list[RequestEvent]]:
        ids = {q.id for q in reqs}
        while any(q.id in self.requests for q in reqs):  # a request leaves when it ends or is aborted
            events = [e for e in self.step() if e.request_id in ids]
            if events:
                yield events

    def _submit_all(self, prompts, params) -> list[Request]:
        prompts = [list(p) for p in prompts]
        params = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} sampling settings for {len(prompts)} prompts")
        if self.auto_size and not self.has_unfinished():  # size an idle engine's cache to this batch
            longest = max((len(p) for p in prompts), default=1)
            new = max((p.max_new_tokens for p in params), default=0)
            rows = min(self.batch_limit, max(1, len(prompts)))
            length = min(self.cfg.context, longest + max(1, new))
            if self.cache is None or rows > self.max_batch or length > self.max_len:
                self._allocate(
                    max(rows, self.max_batch if self.cache else 1),
                    max(length, self.max_len if self.cache else 1),
                )
        return [self._submit(p, prm, 1, None) for p, prm in zip(prompts, params)]


def _converted(model, dtype: torch.dtype):
    """A copy of `model` in `dtype` (the caller's model is left as it is)."""
    import copy

    return copy.deepcopy(model).to(dtype)
