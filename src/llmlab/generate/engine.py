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
in a staging slot (up to `PREFILL_ROWS` prompts at once), at most `prefill_chunk` prompt tokens per
engine step in all (so a long prompt does not stall the running rows for long), and those chunks ride
in the same forward pass as the decode step (generate/packed.py: one pass over the weights for both);
then its cache is copied into the n slots, one per sample, each sampling with its own random stream
(seed + i): n samples share one prefill. Memory: every slot holds `max_len` positions
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from llmlab.errors import UserError
from llmlab.generate.compiled import StaticStep, bucket, compiled_step, converted
from llmlab.generate.packed import Part, can_pack, packed_forward
from llmlab.generate.rows import (
    Completion,
    Request,
    RequestEvent,
    Row,
    check_prompt,
    copy_slots,
    default_stop_token_ids,
    eval_mode,
    new_row,
    prompt_ids,
    tool_token_ids,
    tool_turn,
)
from llmlab.generate.sampling import BatchSampler, SamplingParams, chosen_logprobs, grown
from llmlab.model.kv_cache import KVCache

PREFILL_ROWS = 4  # prompts prefilled at once, each in a staging slot of its own


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
            model = converted(model, dtype)
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
        self.prefilling: list[Request] = []  # admitted, prompt not yet all in its staging slot
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
        ids = prompt_ids(self.tok, prompt, self.cfg.context, truncate, max_new_tokens)
        self._check_prompt(ids)
        return ids

    def _check_prompt(self, ids: Sequence[int]) -> None:
        check_prompt(ids, self.cfg.vocab_size, self.max_len)

    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        n: int = 1,
        on_tool_call: Callable[[int, int, str], str | None] | None = None,
    ) -> int:
        """Queue a prompt for n samples; returns its request id. It starts at a later `step`."""
        if self.auto_size and self.cache is not None and not self.has_unfinished():
            # generate_ids sized this idle engine's cache to one batch: back to the full size
            full = (self.batch_limit, self.cfg.context)
            if (self.max_batch, self.max_len) != full:
                self.cache, (self.max_batch, self.max_len) = None, full
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
        if req in self.prefilling:
            self.prefilling.remove(req)
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
        """Admit and prefill waiting requests (up to prefill_chunk prompt tokens), and one decode step
        for every running row, in one forward pass where the model allows. Returns what each row produced."""
        events: list[RequestEvent] = []
        if self.cache is None:
            self._allocate(self.max_batch, self.max_len)
        # A model in eval mode needs no switching (walking every module each step costs ~4% at batch 8).
        with eval_mode(self.model) if self.model.training else contextlib.nullcontext():
            plan = self._prefill_plan()
            if not self.static and can_pack(self.model):
                self._packed_step(plan, events)
            else:  # fixed-shape decode steps (CUDA graphs), or a model without packed passes
                for req, take in plan:
                    self._prefilled(req, take, self._prefill_alone(req, take), events)
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
        self.staging = KVCache(self.cfg, min(PREFILL_ROWS, rows), **kw)
        self.steps.clear()
        if len(self.sampler.params) < rows + 1:
            self.sampler = grown(self.sampler, None, rows + 1)

    def _prefill_plan(self) -> list[tuple[Request, int]]:
        """Admit waiting requests while their samples fit and a staging slot is free; then share this
        step's prompt-token budget among the admitted ones, first come first: [(request, tokens)]."""
        reserved = len(self.running) + sum(r.n for r in self.prefilling)
        while (
            self.waiting
            and len(self.prefilling) < self.staging.k[0].shape[0]
            and reserved + self.waiting[0].n <= self.max_batch
        ):
            req = self.waiting.popleft()
            used = {r.staging for r in self.prefilling}
            req.staging = min(i for i in range(self.staging.k[0].shape[0]) if i not in used)
            self.prefilling.append(req)
            reserved += req.n
        plan, budget = [], self.prefill_chunk
        for req in self.prefilling:
            take = min(budget, len(req.prompt) - req.prefilled)
            if take == 0:
                break
            plan.append((req, take))
            budget -= take
        return plan

    def _prefill_part(self, req: Request, take: int) -> Part:
        start = req.prefilled
        return Part(
            ids=torch.tensor([req.prompt[start : start + take]], device=self.device),
            positions=torch.arange(start, start + take, device=self.device)[None],
            cache=self.staging.rows(req.staging, req.staging + 1),
            cache_pos=start,
            all_logits=req.prompt_logprobs is not None,  # echo needs every position's logits
        )

    def _prefill_alone(self, req: Request, take: int) -> torch.Tensor:
        p = self._prefill_part(req, take)
        logits = self.model(p.ids, cache=p.cache, cache_pos=p.cache_pos, last_only=not p.all_logits)
        return logits[0]

    def _prefilled(self, req: Request, take: int, logits: torch.Tensor, events: list[RequestEvent]) -> None:
        """`take` more prompt tokens are in the staging slot (`logits` at their positions, or the last);
        once the whole prompt is there, its rows start."""
        if req.prompt_logprobs is not None:
            start = req.prefilled
            targets = torch.tensor(req.prompt[start + 1 : start + take + 1], device=self.device)
            logp = logits[: len(targets)].float().log_softmax(-1)  # position j predicts prompt[j + 1]
            req.prompt_logprobs += logp.gather(-1, targets[:, None])[:, 0].tolist()
        req.prefilled += take
        if req.prefilled == len(req.prompt):
            self.prefilling.remove(req)
            self._start_rows(req, logits[-1], events)

    def _packed_step(self, plan: list[tuple[Request, int]], events: list[RequestEvent]) -> None:
        """The decode step for every running row and this step's prompt chunks, in one forward pass."""
        rows = list(self.running)
        parts = [self._decode_part(rows)] if rows else []
        parts += [self._prefill_part(req, take) for req, take in plan]
        if not parts:
            return
        outs = packed_forward(self.model, parts)
        if rows:
            self.step_widths.append(len(rows))
            for r in rows:
                r.length += 1  # its last token is in the cache now
            self._advance(rows, outs.pop(0), None, 0, events)
            self._remove_finished()
        for (req, take), logits in zip(plan, outs):
            self._prefilled(req, take, logits, events)

    def _start_rows(self, req: Request, logits: torch.Tensor, events: list[RequestEvent]) -> None:
        """The prompt is in the staging slot: give each sample a slot, a random stream, its first token."""
        R, L, p = len(self.running), len(req.prompt), req.params
        stops = set(p.stop_token_ids if p.stop_token_ids is not None else self.stop_token_ids)
        for i in range(req.n):
            row = new_row(req, i, stops, self.tok, slot=R + i)
            self.sampler.assign(row.slot, p, seed_offset=i)
            self.sampler.observe_prompt(row.slot, req.prompt)
            req.rows.append(row)
            self.running.append(row)
        copy_slots(self.cache, slice(R, R + req.n), self.staging, req.staging, L)  # one copy for n rows
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
        chosen = None
        if self.static:
            tokens = torch.tensor([r.last for r in rows], device=self.device)
            pos = torch.tensor([r.length for r in rows], device=self.device)
            logits, chosen = self._static_step(R)(tokens, pos)
        else:
            p = self._decode_part(rows)
            logits = self.model(
                p.ids, positions=p.positions, attn_mask=p.attn_mask, cache=p.cache, cache_pos=p.cache_pos
            )[:, -1]
        for r in rows:
            r.length += 1  # its last token is in the cache now
        self._advance(rows, logits, chosen, 0, events)
        self._remove_finished()

    def _decode_part(self, rows: list[Row]) -> Part:
        """Each row's last token at its own position; rows of one length (a batch that started
        together) write one slot, others each their own with a mask of the slots it may read."""
        R = len(rows)
        tokens = torch.tensor([[r.last] for r in rows], device=self.device)
        pos = torch.tensor([r.length for r in rows], device=self.device)
        if len({r.length for r in rows}) == 1:
            return Part(tokens, pos[:, None], self.cache.rows(0, R), rows[0].length)
        key_ok = torch.arange(int(pos.max()) + 1, device=self.device)[None] <= pos[:, None]
        return Part(tokens, pos[:, None], self.cache.rows(0, R), pos, key_ok[:, None, None, :])

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
            tool = r.request.on_tool_call is not None and tid == self._tool_tokens()[1]
            if tool and not r.done and not forced[i]:
                r.forced.extend(tool_turn(self.tok, self._tool_tokens(), r))  # the tool's turn, forced

    def _remove_finished(self) -> None:
        """Free the slots of finished rows: with n rows still running, each running row beyond slot n
        moves into a finished row's slot below n (cache and sampler: one indexed copy per tensor)."""
        n = sum(not r.done for r in self.running)
        if n < len(self.running):
            holes = [i for i in range(n) if self.running[i].done]
            movers = [r for r in self.running[n:] if not r.done]
            if movers:
                src = [r.slot for r in movers]
                idx = torch.tensor(src, device=self.device), torch.tensor(holes, device=self.device)
                copy_slots(self.cache, idx[1], self.cache, idx[0], max(r.length for r in movers))
                self.sampler.move(src, holes)
            for i, r in zip(holes, movers):
                r.slot, self.running[i] = i, r
            for slot in range(n, len(self.running)):
                self.sampler.clear(slot)
            del self.running[n:]
        for req in [q for q in self.requests.values() if q.rows and all(r.done for r in q.rows)]:
            del self.requests[req.id]

    def _tool_tokens(self) -> tuple[int, ...]:
        if not hasattr(self, "_tool_ids"):
            self._tool_ids = tool_token_ids(self.tok)
        return self._tool_ids

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
