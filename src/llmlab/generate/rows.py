"""What the engine keeps per request and per row, and what it hands back.

A request (one prompt, n samples) becomes n rows once admitted; each row is one sequence in one KV-cache
slot. Per row: its tokens and log-probabilities (the `Completion`), its stop state (stop tokens, stop
strings across token boundaries, the budget), and a queue of forced tokens — tokens it reads as if it
had written them (a tool's result), marked `forced` so losses and log-prob sums can leave them out.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmlab.errors import UserError
from llmlab.generate.sampling import SamplingParams
from llmlab.tokenizer.stream import StreamDecoder

# Special tokens that end generation by default, when the tokenizer has them.
DEFAULT_STOP_TOKENS = ("<|end|>", "<|bos|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


@dataclass
class Completion:
    """One row's result. token_ids exclude the stop token; `text` is cut before a stop string.

    logprobs[i]: log p(token_ids[i]) under the model (raw logits, temperature 1); sample_logprobs[i]:
    under the distribution actually sampled from (after penalties, temperature, top-k/p, min-p; 0 for
    greedy); forced[i]: the token was forced (a tool result), not sampled. prompt_logprobs (echo):
    log p(prompt[j] | prompt[:j]) for j ≥ 1 (None for the first token)."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] | None = None
    sample_logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    forced: list[bool] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    finish_reason: str | None = None  # "stop" (token or string), "length" or "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    request_id: int = -1
    index: int = 0  # which of the request's n samples


@dataclass
class RequestEvent:
    """What one engine step produced for one row."""

    request_id: int
    index: int  # which of the n samples
    token_id: int | None  # None when the row finished without a new output token (a stop token)
    text_delta: str
    finished: bool
    finish_reason: str | None = None
    logprob: float | None = None  # model log p of token_id (when the request asked for logprobs)
    forced: bool = False
    top_logprobs: list | None = None  # [(token id, model log p)] of the most likely, when asked for


@contextmanager
def eval_mode(*models):
    """Run with every module of `models` in eval mode (no dropout), then restore each module's own mode:
    a no-op for models already in eval mode."""
    training = [m for model in models for m in model.modules() if m.training]
    # object.__setattr__: nn.Module's own first looks for a parameter, buffer or submodule of that
    # name (~10 µs a module, paid twice per engine step of a model in training mode)
    for m in training:
        object.__setattr__(m, "training", False)
    try:
        yield
    finally:
        for m in training:
            object.__setattr__(m, "training", True)


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


def prompt_ids(tok, prompt, context: int, truncate: bool = False, max_new_tokens: int = 0) -> list[int]:
    """Text (special tokens allowed) or ids → ids; with `truncate`, a prompt longer than the context
    keeps its last tokens, leaving room for the answer (half the window at least)."""
    if isinstance(prompt, str):
        if tok is None:
            raise UserError("this model has no tokenizer; pass token ids instead of text")
        ids = list(tok.encode(prompt, allowed_special="all"))
    else:
        ids = [int(i) for i in prompt]
    if len(ids) > context and truncate:
        ids = ids[-max(context // 2, context - max_new_tokens) :]
    return ids


def check_prompt(ids, vocab_size: int, max_len: int) -> None:
    """A prompt the engine can run: non-empty, ids in the vocabulary, no longer than `max_len`."""
    if not ids:
        raise UserError("empty prompt; give at least one token (e.g. start with <|bos|>)")
    if any(not 0 <= i < vocab_size for i in ids):
        raise UserError(f"prompt has token ids outside the vocabulary [0, {vocab_size})")
    if len(ids) > max_len:
        raise UserError(
            f"prompt is {len(ids)} tokens but the context window is {max_len}; shorten it "
            "or pass --truncate to keep its last tokens"
        )


def copy_slots(dst, dst_rows, src, src_rows, length: int) -> None:
    """KV caches: rows `src_rows` of `src` (an index, a slice or an index tensor) → rows `dst_rows` of
    `dst`, the first `length` positions; one copy per layer tensor, whatever the number of rows (a
    prompt's n samples, a compaction)."""
    for t, s in zip((*dst.k, *dst.v), (*src.k, *src.v)):
        t[dst_rows, :, :length] = s[src_rows, :, :length]


def default_stop_token_ids(tok) -> list[int]:
    specials = getattr(tok, "special_tokens", None) or {}
    return [specials[s] for s in DEFAULT_STOP_TOKENS if s in specials]


@dataclass
class Request:
    """A prompt and how to continue it; its rows exist once it is admitted."""

    id: int
    prompt: list[int]
    params: SamplingParams
    n: int
    on_tool_call: Callable[[int, int, str], str | None] | None
    rows: list[Row] = field(default_factory=list)
    prefilled: int = 0  # prompt tokens already in its staging slot's cache (chunked prefill)
    staging: int = -1  # its staging slot while it is prefilled
    prompt_logprobs: list[float | None] | None = None


@dataclass
class Row:
    """One sequence of a request, in one cache slot while it runs.

    `length` tokens are in its cache; `last` is the token it reads next (just sampled or forced, not yet
    in the cache)."""

    request: Request
    index: int
    comp: Completion
    stop_ids: set[int]
    text: TextTracker | None
    budget: int  # sampled tokens allowed (max_new_tokens)
    length: int = 0
    last: int = 0
    slot: int = -1
    forced: deque = field(default_factory=deque)
    done: bool = False
    sampled: int = 0  # tokens accepted that were not forced (what the budget counts)

    def accept(self, tid: int, forced: bool, context: int, lp: tuple | None) -> RequestEvent:
        """Record token `tid` (sampled, or forced) with its log-probabilities `lp` = (model, sampled,
        top) and check the stop conditions: a stop token (never for a forced one), a stop string, the
        budget of sampled tokens, the end of the context window (no slot left to read it into)."""
        if not forced and tid in self.stop_ids:
            return self.finish(None, "stop", tid)
        c = self.comp
        c.token_ids.append(tid)
        c.forced.append(forced)
        self.sampled += not forced
        if c.logprobs is not None and lp is not None:
            c.logprobs.append(lp[0])
            c.sample_logprobs.append(lp[1])
            if c.top_logprobs is not None:
                c.top_logprobs.append(lp[2])
        self.last = tid
        if self.text is not None:
            self.text.push(tid)
            if self.text.hit is not None:
                return self.finish(tid, "stop", self.text.hit)
        if self.sampled >= self.budget or self.length >= context:
            return self.finish(tid, "length")
        delta = self.text.delta(final=False) if self.text else ""
        return self.event(tid, delta, False, None, forced)

    def finish(self, tid: int | None, reason: str, stop_reason: int | str | None = None) -> RequestEvent:
        self.done = True
        self.comp.finish_reason, self.comp.stop_reason = reason, stop_reason
        delta = ""
        if self.text is not None:
            self.text.finish()
            self.comp.text = self.text.text
            delta = self.text.delta(final=True)
        return self.event(tid, delta, True, reason, False)

    def event(self, tid, delta: str, finished: bool, reason: str | None, forced: bool) -> RequestEvent:
        c = self.comp
        has = bool(c.logprobs) and tid is not None and bool(c.token_ids)
        lp = c.logprobs[-1] if has else None
        top = c.top_logprobs[-1] if has and c.top_logprobs else None
        return RequestEvent(self.request.id, self.index, tid, delta, finished, reason, lp, forced, top)


def new_row(req: Request, index: int, stops: set[int], tok, slot: int) -> Row:
    """Sample `index` of `req` as a row in cache slot `slot`, its prompt already there."""
    p = req.params
    comp = Completion(prompt_ids=req.prompt, request_id=req.id, index=index)
    comp.prompt_logprobs = req.prompt_logprobs
    if p.logprobs is not None:
        comp.logprobs, comp.sample_logprobs = [], []
        comp.top_logprobs = [] if p.logprobs > 0 else None
    text = TextTracker(tok, p.stop) if tok is not None else None
    return Row(req, index, comp, stops, text, p.max_new_tokens, length=len(req.prompt), slot=slot)


# The template's tool-call and tool-result tokens, in the order `tool_turn` reads them.
TOOL_TOKENS = (
    "<|tool_call|>",
    "<|/tool_call|>",
    "<|end|>",
    "<|tool|>",
    "<|tool_result|>",
    "<|/tool_result|>",
    "<|assistant|>",
)


def tool_token_ids(tok) -> tuple[int, ...]:
    """Their ids, or () when the tokenizer lacks any of them."""
    specials = getattr(tok, "special_tokens", None) or {}
    return tuple(specials[s] for s in TOOL_TOKENS) if all(s in specials for s in TOOL_TOKENS) else ()


def tool_turn(tok, tool_ids: tuple[int, ...], row: Row) -> list[int]:
    """The row just wrote `<|/tool_call|>`: call its request's `on_tool_call` with the call's text and
    return the tool turn to force, `<|end|><|tool|>name<|tool_result|>result<|/tool_result|><|end|>
    <|assistant|>` ([] when the callback returns None). A callback that raises gives an error result."""
    start, _, end, tool, result_open, result_close, assistant = tool_ids
    ids = row.comp.prompt_ids + row.comp.token_ids  # the call may open in the prompt
    opened = max((i for i, t in enumerate(ids) if t == start), default=-1)
    call_text = tok.decode(ids[opened + 1 : -1])
    try:
        result = row.request.on_tool_call(row.request.id, row.index, call_text)
    except Exception as e:  # a tool's failure is the model's to read, not the engine's crash
        result = json.dumps({"error": f"{type(e).__name__}: {e}"})
    if result is None:
        return []
    try:
        name = str(json.loads(call_text).get("name", ""))
    except (json.JSONDecodeError, AttributeError):
        name = ""
    enc = tok.encode_ordinary
    return [end, tool, *enc(name), result_open, *enc(str(result)), result_close, end, assistant]
