"""One thread owns the engine; HTTP handlers hand it work and read what it produced through queues.

    handler ──submit(prompt, params, n)──► inbox (queue.SimpleQueue) ──► engine thread: add_request
    handler ◄──Update / Failure── asyncio.Queue of that submission ◄── call_soon_threadsafe ◄── step()
    handler ──abort(sub)──► inbox ──► engine.abort(request id): its rows' slots are free for the next step

The thread loads the model (when given a loader), warms the engine up with one short request, then
sets `ready`. Nothing a request does can stop the thread: a request the engine refuses
(`add_request` raises) fails alone; an exception inside `step()` cannot be traced to one row, so
the requests in flight at that moment fail (each gets a `Failure`, its rows are aborted) and the loop
goes on with the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.generate import Completion, Engine, RequestEvent, SamplingParams
from llmlab.serve.metrics import Metrics

log = logging.getLogger("llmlab.serve")


@dataclass
class Update:
    """One engine event for one sample, with what the handler needs beyond it."""

    event: RequestEvent
    top: list[tuple[int, float]] | None = None  # top log-probabilities of event.token_id's position
    completion: Completion | None = None  # on the sample's last event
    prompt_top: list | None = None  # with echo and top log-probs: the prompt positions' (see below)


@dataclass
class Failure:
    status: int
    message: str


@dataclass
class Submission:
    """One engine request as the handler sees it: its updates arrive on `updates`, in the handler's
    event loop, tagged with `tag` (which prompt of the HTTP request it is)."""

    prompt: list[int]
    params: SamplingParams
    n: int
    aio_loop: asyncio.AbstractEventLoop
    updates: asyncio.Queue  # (tag, Update | Failure); one queue may serve several submissions
    tag: int = 0
    request_id: int | None = None
    rows: list = field(default_factory=list)  # the engine's rows of this request (read for top log-probs)
    # engine-thread state: tokens seen per sample (to index top log-probs), timings for the metrics
    submitted: float = field(default_factory=time.monotonic)
    last_token: dict[int, float] = field(default_factory=dict)
    open_samples: int = 0
    prompt_top: list | None = None

    def put(self, item: Update | Failure) -> None:
        with contextlib.suppress(RuntimeError):  # the handler's event loop is gone (shutting down)
            self.aio_loop.call_soon_threadsafe(self.updates.put_nowait, (self.tag, item))


class EngineLoop:
    """The engine thread. `submit` / `abort` may be called from any thread."""

    def __init__(
        self,
        make_engine: Callable[[], Engine],
        metrics: Metrics,
        max_waiting: int = 256,
        warmup: bool = True,
    ):
        self.make_engine, self.metrics, self.max_waiting, self.warmup = (
            make_engine,
            metrics,
            max_waiting,
            warmup,
        )
        self.engine: Engine | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.active: dict[int, Submission] = {}
        self.in_flight = 0  # submissions not yet finished (handler threads read it for 429s)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="llmlab-engine", daemon=True)

    # ---- any thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.inbox.put(("wake", None))
        self.thread.join(timeout)

    def full(self) -> bool:
        """True when the queue is at its limit: running rows plus `max_waiting` waiting requests."""
        cap = (self.engine.max_batch if self.engine else 0) + self.max_waiting
        return self.in_flight >= cap

    def submit(self, sub: Submission) -> Submission:
        with self.lock:
            self.in_flight += 1
        self.inbox.put(("add", sub))
        return sub

    def abort(self, sub: Submission) -> None:
        self.inbox.put(("abort", sub))

    # ---- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.engine = self.make_engine()
            if self.warmup:  # add_request + step, not generate_ids (which may resize an idle engine)
                rid = self.engine.add_request([0, 0], SamplingParams(max_new_tokens=2, temperature=0))
                while rid in self.engine.requests:
                    self.engine.step()
        except Exception as e:  # a model that cannot load: /health says why, the thread ends
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("llmlab serve: the model failed to load")
            return
        self.ready.set()
        while not self.stopping.is_set():
            try:
                self._drain(block=not self.engine.has_unfinished())
                if self.engine.has_unfinished():
                    self._step()
                self._snapshot()
            except Exception as e:  # a bug of ours, not a request's: fail what is in flight, go on
                log.exception("llmlab serve: the engine loop failed; failing the requests in flight")
                self._fail_all(e)

    def _drain(self, block: bool) -> None:
        while True:
            try:
                kind, sub = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if kind == "add":
                self._add(sub)
            elif kind == "abort":
                self._abort(sub)

    def _add(self, sub: Submission) -> None:
        try:
            sub.request_id = self.engine.add_request(sub.prompt, sub.params, n=sub.n)
        except UserError as e:
            self._fail(sub, Failure(400, str(e)))
            return
        except Exception as e:
            log.exception("llmlab serve: add_request failed")
            self._fail(sub, Failure(500, f"the engine refused the request: {type(e).__name__}: {e}"))
            return
        sub.rows = self.engine.requests[sub.request_id].rows  # filled in when it is admitted
        sub.open_samples = sub.n
        self.active[sub.request_id] = sub
        self.metrics.prompt_tokens.inc(len(sub.prompt))

    def _abort(self, sub: Submission) -> None:
        # Its "add" came first (one FIFO inbox): no request id means the engine refused it (released).
        if sub.request_id is not None and self.active.pop(sub.request_id, None) is not None:
            self._release()
            self.metrics.aborted.inc()
            self.engine.abort(sub.request_id)

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as e:
            log.exception("llmlab serve: engine step failed; failing the requests in flight")
            self._fail_all(e)
            return
        now = time.monotonic()
        for ev in events:
            sub = self.active.get(ev.request_id)
            if sub is None:
                continue
            try:
                self._dispatch(sub, ev, now)
            except Exception as e:  # this request's bookkeeping failed: it alone fails
                log.exception("llmlab serve: handing an event back failed")
                if self.active.pop(sub.request_id, None) is not None:
                    self.engine.abort(sub.request_id)
                    self._fail(sub, Failure(500, f"the server failed: {type(e).__name__}: {e}"))

    def _fail_all(self, e: Exception) -> None:
        """Fail every request in flight (a step cannot be traced to one row) and abort its rows."""
        for rid, sub in list(self.active.items()):
            self.active.pop(rid)
            try:
                self.engine.abort(rid)
            except Exception:
                log.exception("llmlab serve: abort after a failure failed")
            self._fail(sub, Failure(500, f"the engine failed: {type(e).__name__}: {e}"))

    def _dispatch(self, sub: Submission, ev: RequestEvent, now: float) -> None:
        comp = sub.rows[ev.index].comp if ev.index < len(sub.rows) else None
        top = ev.top_logprobs
        if ev.token_id is not None:
            self._time_token(sub, ev.index, now)
        prompt_top = None
        if ev.finished and sub.params.echo and sub.params.logprobs:
            sub.prompt_top = sub.prompt_top or self._prompt_top(sub.prompt, sub.params.logprobs)
            prompt_top = sub.prompt_top
        sub.put(Update(ev, top, comp if ev.finished else None, prompt_top))
        if ev.finished:
            sub.open_samples -= 1
            if sub.open_samples == 0:
                self.active.pop(sub.request_id, None)
                self._release()

    @torch.inference_mode()
    def _prompt_top(self, prompt: list[int], k: int) -> list:
        """The top-k (id, log p) at each prompt position j ≥ 1, None at 0: the engine records only the
        prompt tokens' own log-probs (echo), and lm-evaluation-harness also reads the top ones. One
        forward of the prompt, in this thread (which owns the model)."""
        ids = torch.tensor([prompt], device=self.engine.device)
        logp = self.engine.model(ids)[0, :-1].float().log_softmax(-1)
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        return [None] + [list(zip(i, v)) for i, v in zip(top.indices.tolist(), top.values.tolist())]

    def _time_token(self, sub: Submission, index: int, now: float) -> None:
        self.metrics.generation_tokens.inc()
        last = sub.last_token.get(index)
        if last is None:
            if index == 0:
                self.metrics.ttft.observe(now - sub.submitted)
        else:
            self.metrics.per_token.observe(now - last)
        sub.last_token[index] = now

    def _fail(self, sub: Submission, failure: Failure) -> None:
        sub.put(failure)
        self._release()

    def _release(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def _snapshot(self) -> None:
        e = self.engine
        running_requests = {r.request.id for r in e.running}
        waiting = len(e.waiting) + len(e.prefilling)
        self.metrics.set_engine(len(e.running), len(running_requests), waiting, e.kv_cache_bytes, e.max_batch)
