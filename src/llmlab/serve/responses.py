"""Engine output → OpenAI's response shapes: choices, log-probabilities, tool calls, usage.

Tool calls in a stream: `ToolCallSplitter` reads the text deltas and separates content from
`<|tool_call|>…<|/tool_call|>` segments. Content is passed on as it comes, except a tail that could
still be the start of `<|tool_call|>` (held back until it cannot be); a call is buffered until it
closes, then sent as two deltas (OpenAI's order): `{index, id, type, function: {name, arguments: ""}}`,
then `{index, function: {arguments}}`. A call that is not valid JSON with a name, or never closes,
is sent as content, as written (`parse_assistant` does the same for whole replies).
"""

from __future__ import annotations

import json
import secrets
import time

from llmlab.tokenizer.chat import TOOL_CALL, TOOL_CALL_END, parse_tool_call


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


class ToolCallSplitter:
    """Streamed reply text → a list of pieces per push: ("content", text) or ("call", {name, arguments})."""

    def __init__(self, prefix: str = ""):
        self.buf = prefix
        self.in_call = False

    def push(self, text: str) -> list[tuple[str, object]]:
        self.buf += text
        out: list[tuple[str, object]] = []
        while True:
            if not self.in_call:
                i = self.buf.find(TOOL_CALL)
                if i < 0:
                    keep = _partial_suffix(self.buf, TOOL_CALL)
                    _content(out, self.buf[: len(self.buf) - keep])
                    self.buf = self.buf[len(self.buf) - keep :]
                    return out
                _content(out, self.buf[:i])
                self.buf, self.in_call = self.buf[i + len(TOOL_CALL) :], True
            j = self.buf.find(TOOL_CALL_END)
            if j < 0:
                return out
            body, self.buf, self.in_call = self.buf[:j], self.buf[j + len(TOOL_CALL_END) :], False
            try:
                name, args = parse_tool_call(body)
            except ValueError:
                _content(out, TOOL_CALL + body + TOOL_CALL_END)
                continue
            out.append(("call", {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}))

    def finish(self) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        _content(out, (TOOL_CALL if self.in_call else "") + self.buf)
        self.buf, self.in_call = "", False
        return out


def _partial_suffix(text: str, token: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `token`."""
    for k in range(min(len(token) - 1, len(text)), 0, -1):
        if text.endswith(token[:k]):
            return k
    return 0


def _content(out: list, text: str) -> None:
    if text:
        out.append(("content", text))


def split_reply(text: str, id_prefix: str) -> tuple[str | None, list[dict]]:
    """A whole reply → (content or None, OpenAI tool calls), by the same rules as the stream."""
    splitter = ToolCallSplitter()
    pieces = splitter.push(text) + splitter.finish()
    content = "".join(p for kind, p in pieces if kind == "content")
    calls = [tool_call(id_prefix, k, c) for k, c in enumerate(p for kind, p in pieces if kind == "call")]
    return (content or None) if calls else content, calls


def tool_call(id_prefix: str, index: int, call: dict) -> dict:
    return {"id": f"{id_prefix}{index}", "type": "function", "function": dict(call)}


# ---- log-probabilities ----------------------------------------------------------------------------


def token_text(tok, token_id: int) -> str:
    return tok.decode([token_id])


def chat_logprob(tok, token_id: int, logprob: float, top: list[tuple[int, float]] | None) -> dict:
    """One entry of a chat choice's `logprobs.content`: the token, its log p, bytes, the top ones."""
    entry = _lp_entry(tok, token_id, logprob)
    entry["top_logprobs"] = [_lp_entry(tok, t, lp) for t, lp in top or []]
    return entry


def _lp_entry(tok, token_id: int, logprob: float) -> dict:
    raw = tok.decode_bytes([token_id]) if hasattr(tok, "decode_bytes") else token_text(tok, token_id).encode()
    return {"token": token_text(tok, token_id), "logprob": logprob, "bytes": list(raw)}


def completion_logprobs(tok, ids: list[int], lps: list, tops: list | None, offset: int) -> dict:
    """The legacy completions `logprobs` object for tokens `ids` (text offsets start at `offset`)."""
    tokens = [token_text(tok, t) for t in ids]
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    top = [
        None if tp is None else {token_text(tok, t): lp for t, lp in tp} for tp in (tops or [None] * len(ids))
    ]
    return {"tokens": tokens, "token_logprobs": list(lps), "top_logprobs": top, "text_offset": offsets}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(engine_reason: str | None, has_calls: bool) -> str | None:
    if engine_reason is None:
        return None
    if has_calls:
        return "tool_calls"
    return "length" if engine_reason == "length" else "stop"
