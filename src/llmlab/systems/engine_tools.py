"""Tool calls inside one engine request: the model closes a call, the tool runs, the result is forced
into the turn and the model goes on (`generate(..., tools=[...])`, `llmlab chat --tools ...`).

The engine calls `on_tool_call(request_id, index, call_text)` when a row writes `<|/tool_call|>` and
forces the returned string in as the tool turn (see `llmlab.generate.engine`). `tool_callback` is that
function: the call's JSON is parsed (`parse_tool_call`), the tool runs (`run_call`: validation, errors
and timeouts as text), and each row gets at most `max_rounds` results; the next call gets
"error: tool limit reached" and any after that gets nothing forced (the row writes on, to its end).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from llmlab.errors import UserError
from llmlab.systems.tools import Tool, get_tools, run_call
from llmlab.tokenizer.chat import HEADERS, parse_tool_call

LIMIT_REACHED = "error: tool limit reached ({n} calls); answer without calling tools"


def tool_callback(tools: Sequence[Tool], max_rounds: int = 8) -> Callable[[int, int, str], str | None]:
    """The engine's `on_tool_call` for these tools, with at most `max_rounds` results per row."""
    if max_rounds < 1:
        raise UserError(f"max_tool_rounds must be >= 1, got {max_rounds}")
    rounds: dict[tuple[int, int], int] = defaultdict(int)

    def on_tool_call(request_id: int, index: int, call_text: str) -> str | None:
        rounds[request_id, index] += 1
        n = rounds[request_id, index]
        if n > max_rounds + 1:
            return None
        if n > max_rounds:
            return LIMIT_REACHED.format(n=max_rounds)
        try:
            name, args = parse_tool_call(call_text)
        except ValueError as e:
            return f"error: malformed tool call: {e}"
        return run_call(tools, name, args)

    return on_tool_call


def chat_prompts(tok, prompts: list, tools: Sequence[Tool]) -> list:
    """Plain-text prompts become a user turn with the tools in the system turn; prompts that are
    already rendered (token ids, or text with an `<|assistant|>` header) are left as they are."""
    schemas = [t.schema for t in get_tools(list(tools))]
    return [
        tok.render_for_generation([{"role": "user", "content": p}], tools=schemas)
        if isinstance(p, str) and HEADERS["assistant"] not in p
        else p
        for p in prompts
    ]


def run_with_tools(
    engine, ids: list[list[int]], params: list, tools, single: bool, stream: bool, max_rounds: int
):
    """Each prompt as one request whose tool calls run mid-turn → texts (or a stream of deltas)."""
    callback = tool_callback(get_tools(list(tools)), max_rounds)
    reqs = []
    for p, prm in zip(ids, params):
        rid = engine.add_request(p, prm, on_tool_call=callback)
        reqs.append(engine.requests[rid])
    if stream:
        return _stream(engine, reqs, single)
    while any(q.id in engine.requests for q in reqs):
        engine.step()
    texts = [q.rows[0].comp.text for q in reqs]
    return texts[0] if single else texts


def _stream(engine, reqs, single: bool) -> Iterator:
    first = reqs[0].id
    while any(q.id in engine.requests for q in reqs):
        for ev in engine.step():
            if ev.text_delta:
                yield ev.text_delta if single else (ev.request_id - first, ev.text_delta)
