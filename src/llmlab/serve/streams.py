"""One HTTP request's run through the engine loop: submit its prompts, then answer with one JSON body or
an SSE stream (`data: {chunk}` lines, then `data: [DONE]`).

The first update is awaited before answering, so a request the engine refuses is a plain error
response; a failure after the stream has started is sent as an `{"error": ...}` event, then the stream
ends. Whatever ends the response (done, a client that went away, an error), every unfinished
submission is aborted, so its rows leave the engine at its next step.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llmlab.serve.errors import APIError, envelope
from llmlab.serve.loop import Failure, Submission, Update
from llmlab.serve.requests import TOOL_CALL_END, Job
from llmlab.serve.responses import (
    ToolCallSplitter,
    chat_logprob,
    completion_logprobs,
    finish_reason,
    new_id,
    now,
    split_reply,
    tool_call,
    usage,
)
from llmlab.tokenizer.chat import REPLY_PREFIX


class Disconnected(Exception):
    pass


class EngineStream(StreamingResponse):
    """A StreamingResponse that runs `on_close` however the response ends (a client may just leave)."""

    def __init__(self, content, on_close):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(data: dict) -> str:
    """One event. ASCII-only JSON: a raw U+2028 or U+0085 in model text would end the line for
    clients that split lines like Python's str.splitlines (httpx's iter_lines does)."""
    return f"data: {json.dumps(data)}\n\n"


class JobRun:
    def __init__(self, server, job: Job, body, request: Request, chat: bool):
        self.server, self.job, self.body, self.request, self.chat = server, job, body, request, chat
        self.tok = server.engine.tok
        self.queue: asyncio.Queue = asyncio.Queue()
        aio = asyncio.get_running_loop()
        self.subs = [
            Submission(p, job.params, job.n, aio, self.queue, tag=i) for i, p in enumerate(job.prompts)
        ]
        self.open = {i: job.n for i in range(len(self.subs))}  # unfinished samples per submission
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.call_prefix = f"call_{self.id[-8:]}_"

    async def respond(self) -> Response:
        for sub in self.subs:
            self.server.loop.submit(sub)
        try:
            first = await self._next()
        except BaseException:
            self.close()
            raise
        if isinstance(first[1], Failure):
            self.close()
            raise _api_error(first[1])
        if self.body.stream:
            events = self._chat_stream(first) if self.chat else self._completion_stream(first)
            return EngineStream(events, self.close)
        try:
            comps = await self._collect(first)
        except Disconnected:
            return Response(status_code=499)
        finally:
            self.close()
        return JSONResponse(self._chat_body(comps) if self.chat else self._completion_body(comps))

    def close(self) -> None:
        for i, sub in enumerate(self.subs):
            if self.open[i] > 0:
                self.open[i] = 0
                self.server.loop.abort(sub)

    async def _next(self) -> tuple[int, Update | Failure]:
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except TimeoutError:
                if await self.request.is_disconnected():
                    raise Disconnected from None

    async def _updates(self, first):
        """(tag, Update) until every sample finished; a Failure raises its APIError."""
        item = first
        while True:
            tag, update = item
            if isinstance(update, Failure):
                raise _api_error(update)
            if update.event.finished:
                self.open[tag] -= 1
            yield tag, update
            if not any(self.open.values()):
                return
            item = await self._next()

    async def _collect(self, first) -> list[list]:
        comps = [[None] * self.job.n for _ in self.subs]
        self.prompt_tops = [None] * len(self.subs)
        async for tag, u in self._updates(first):
            if u.completion is not None:
                comps[tag][u.event.index] = u.completion
            if u.prompt_top is not None:
                self.prompt_tops[tag] = u.prompt_top
        return comps

    def _usage(self, comps_tokens: int) -> dict:
        prompt = sum(len(p) for p in self.job.prompts)
        return usage(prompt, comps_tokens)

    def _reply_text(self, comp) -> str:
        closed = self.job.tool_end_id is not None and comp.stop_reason == self.job.tool_end_id
        return comp.text + (TOOL_CALL_END if closed else "")

    # ---- whole responses ------------------------------------------------------------------------
    def _chat_body(self, comps) -> dict:
        choices = []
        for i, comp in enumerate(comps[0]):
            text = self._reply_text(comp)
            if not self.job.forced_text:  # the template writes one space before the reply
                text = text.removeprefix(REPLY_PREFIX)
            content, calls = text, []
            if self.job.parse_tools:
                content, calls = split_reply(self.job.forced_text + text, f"{self.call_prefix}{i}_")
            message = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            lp = None
            if self.job.params.logprobs is not None:
                tops = comp.top_logprobs or [None] * len(comp.token_ids)
                lp = {
                    "content": [
                        chat_logprob(self.tok, t, p, top)
                        for t, p, top in zip(comp.token_ids, comp.logprobs, tops)
                    ]
                }
            reason = finish_reason(comp.finish_reason, bool(calls))
            choices.append({"index": i, "message": message, "finish_reason": reason, "logprobs": lp})
        tokens = sum(len(c.token_ids) for c in comps[0])
        return self._envelope("chat.completion", choices) | {"usage": self._usage(tokens)}

    def _completion_body(self, comps) -> dict:
        choices, n = [], self.job.n
        for p, (prompt, row) in enumerate(zip(self.job.prompts, comps)):
            prompt_text = self.tok.decode(prompt) if self.body.echo else ""
            for j, comp in enumerate(row):
                lp = None
                if self.job.params.logprobs is not None:
                    ids, lps = list(comp.token_ids), list(comp.logprobs)
                    tops = comp.top_logprobs or [None] * len(ids)
                    if self.body.echo:
                        ids, lps = prompt + ids, list(comp.prompt_logprobs or [None] * len(prompt)) + lps
                        tops = (self.prompt_tops[p] or [None] * len(prompt)) + tops
                    lp = completion_logprobs(self.tok, ids, lps, tops, 0)
                choices.append(
                    {
                        "index": p * n + j,
                        "text": prompt_text + comp.text,
                        "finish_reason": finish_reason(comp.finish_reason, False),
                        "logprobs": lp,
                    }
                )
        tokens = sum(len(c.token_ids) for row in comps for c in row)
        return self._envelope("text_completion", choices) | {"usage": self._usage(tokens)}

    def _envelope(self, obj: str, choices: list) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.server.model_name,
            "choices": choices,
        }

    # ---- streams --------------------------------------------------------------------------------
    def _chunk(self, obj: str, choices: list, usage_: dict | None = None) -> str:
        d = self._envelope(obj, choices)
        if self.include_usage:
            d["usage"] = usage_
        return sse(d)

    async def _stream_end(self, gen, obj: str):
        """Run `gen`, then the usage chunk and [DONE]; an error mid-stream becomes an error event."""
        tokens = [0]
        try:
            async for chunk in gen(tokens):
                yield chunk
        except APIError as e:
            yield sse(envelope(e.message, e.type, e.param, e.code))
            return
        except Disconnected:
            return
        if self.include_usage:
            yield self._chunk(obj, [], self._usage(tokens[0]))
        yield "data: [DONE]\n\n"

    def _chat_stream(self, first):
        obj = "chat.completion.chunk"

        async def gen(tokens):
            n = self.job.n
            parse, forced = self.job.parse_tools, self.job.forced_text
            splitters = [ToolCallSplitter(forced) if parse else None for _ in range(n)]
            calls = [0] * n
            started = [bool(forced)] * n  # False until a reply's first text: its space is dropped
            for i in range(n):
                yield self._chunk(obj, [_choice(i, {"role": "assistant", "content": ""})])
            async for _, u in self._updates(first):
                ev, i = u.event, u.event.index
                text = ev.text_delta
                if ev.finished and u.completion is not None:
                    text = self._reply_text(u.completion)[len(u.completion.text) - len(ev.text_delta) :]
                if text and not started[i]:
                    text, started[i] = text.removeprefix(REPLY_PREFIX), True
                pieces = [("content", text)] if splitters[i] is None else splitters[i].push(text)
                if ev.finished and splitters[i] is not None:
                    pieces += splitters[i].finish()
                lp = None
                if (
                    self.job.params.logprobs is not None
                    and ev.token_id is not None
                    and ev.logprob is not None
                ):
                    lp = {"content": [chat_logprob(self.tok, ev.token_id, ev.logprob, u.top)]}
                deltas = []
                for kind, piece in pieces:
                    if kind == "content" and piece:
                        deltas.append({"content": piece})
                    elif kind == "call":
                        c = tool_call(f"{self.call_prefix}{i}_", calls[i], {**piece, "arguments": ""})
                        deltas.append({"tool_calls": [{"index": calls[i], **c}]})
                        deltas.append(
                            {
                                "tool_calls": [
                                    {"index": calls[i], "function": {"arguments": piece["arguments"]}}
                                ]
                            }
                        )
                        calls[i] += 1
                if lp is not None and not deltas:
                    deltas.append({})
                for k, delta in enumerate(deltas):
                    yield self._chunk(obj, [_choice(i, delta, lp if k == 0 else None)])
                if ev.finished:
                    tokens[0] += len(u.completion.token_ids) if u.completion else 0
                    reason = finish_reason(ev.finish_reason, calls[i] > 0)
                    yield self._chunk(obj, [_choice(i, {}, None, reason)])

        return self._stream_end(gen, obj)

    def _completion_stream(self, first):
        obj = "text_completion"

        async def gen(tokens):
            n = self.job.n
            if self.body.echo:
                for p, prompt in enumerate(self.job.prompts):
                    for j in range(n):
                        yield self._chunk(obj, [_text_choice(p * n + j, self.tok.decode(prompt))])
            async for tag, u in self._updates(first):
                ev = u.event
                lp = None
                if (
                    self.job.params.logprobs is not None
                    and ev.token_id is not None
                    and ev.logprob is not None
                ):
                    lp = completion_logprobs(self.tok, [ev.token_id], [ev.logprob], [u.top], 0)
                reason = finish_reason(ev.finish_reason, False) if ev.finished else None
                if ev.text_delta or lp is not None or ev.finished:
                    yield self._chunk(obj, [_text_choice(tag * n + ev.index, ev.text_delta, lp, reason)])
                if ev.finished:
                    tokens[0] += len(u.completion.token_ids) if u.completion else 0

        return self._stream_end(gen, obj)


def _choice(index: int, delta: dict, logprobs=None, reason: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}


def _text_choice(index: int, text: str, logprobs=None, reason: str | None = None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}


def _api_error(f: Failure) -> APIError:
    return APIError(f.status, f.message, type="invalid_request_error" if f.status < 500 else "server_error")
