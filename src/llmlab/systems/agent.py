"""The agent loop: a model, tools, and a conversation that grows one step at a time.

    from llmlab.systems.agent import run_agent
    result = run_agent("What is 37 * 91 - 12?", model=(model, tok), tools=[calculator], max_steps=8)
    result = run_agent(task, model=openai.OpenAI(base_url=..., api_key=...), model_name="llmlab")
    result.answer, result.steps, result.stopped_because

One step = one model call. In **function-calling mode** the tools' schemas go to the model (our chat
template writes them into the system turn; an OpenAI endpoint gets `tools=`); a reply with tool calls
has each call run (`Tool.run`: arguments validated, errors and timeouts returned as text) and its result
appended as a `tool` message; a reply without calls is the final answer. In **ReAct mode** (models
without tool calls) the tools are described in the system prompt and the model writes

    Thought: I need to multiply.
    Action: calculator
    Action Input: {"expression": "37 * 91"}        → we append "Observation: 3367" as the next user turn
    ...
    Final Answer: 3355

Why a run stops (`stopped_because`):

    final_answer   the model answered
    max_steps      max_steps model calls without an answer; then one forced final answer is asked
                   for, with the tools withdrawn ("answer now"), and becomes `answer`
    timeout        max_wall_s elapsed (checked between steps; each tool has its own timeout)
    max_tokens     the model calls used more than max_tokens tokens in all
    stuck          the same call with the same result a third time, or an A-B-A-B oscillation of steps

`trace=` writes one JSON object per line: a "start" record, one per step (the messages it added, each
call with arguments, result and seconds, the step's seconds and tokens), and an "end" record.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmlab.errors import UserError
from llmlab.systems.models import Reply, as_chat_model
from llmlab.systems.tools import Tool, get_tools, run_call

STOP_REASONS = ("final_answer", "max_steps", "timeout", "max_tokens", "stuck")
MODES = ("function", "react")
FORCE_FINAL = "You have used every step. Give your final answer now, without calling any tool."
REACT_SYSTEM = """Solve the task step by step. You can use these tools:
{tools}

Write exactly this format:
Thought: what to do next
Action: the tool's name
Action Input: the arguments as a JSON object
Then stop and wait for the Observation. When you know the answer, write:
Final Answer: the answer"""


@dataclass
class ToolRun:
    name: str
    arguments: str
    result: str
    seconds: float


@dataclass
class Step:
    index: int
    content: str
    calls: list[ToolRun] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0
    final: bool = False


@dataclass
class AgentResult:
    answer: str | None
    steps: list[Step]
    stopped_because: str
    messages: list[dict]
    tokens: int = 0
    wall_s: float = 0.0


class _Trace:
    """Appends JSON lines to a file (or nowhere)."""

    def __init__(self, path: str | Path | None):
        self.f = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()

    def write(self, record: dict) -> None:
        if self.f:
            self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


# ---- ReAct text ---------------------------------------------------------------------------------------

_ACTION = re.compile(
    r"Action:\s*(?P<name>[\w.-]+)\s*\n\s*Action Input:\s*(?P<args>.*?)\s*(?:\nObservation:|$)", re.S
)
_FINAL = re.compile(r"Final Answer:\s*(?P<answer>.*)", re.S)


def parse_react(text: str) -> Reply:
    """A ReAct reply → a Reply: `Final Answer:` is the content; `Action` / `Action Input` one tool call."""
    if m := _FINAL.search(text):
        return Reply(m.group("answer").strip())
    if m := _ACTION.search(text):
        args = m.group("args").strip().strip("`")
        call = {"id": "react", "type": "function", "function": {"name": m.group("name"), "arguments": args}}
        return Reply(text[: m.start()].strip(), [call])
    return Reply(text.strip())


def _react_messages(messages: list[dict], tools: Sequence[Tool]) -> list[dict]:
    listing = "\n".join(f"- {t.name}: {t.description} Arguments: {json.dumps(t.parameters)}" for t in tools)
    return [{"role": "system", "content": REACT_SYSTEM.format(tools=listing)}, *messages]


# ---- one step -------------------------------------------------------------------------------------------


def _run_calls(reply: Reply, tools: Sequence[Tool]) -> list[ToolRun]:
    runs = []
    for call in reply.tool_calls:
        f = call["function"]
        t0 = time.perf_counter()
        try:
            args = json.loads(f["arguments"]) if f["arguments"].strip() else {}
        except json.JSONDecodeError as e:
            result = f"error: the arguments are not valid JSON ({e.msg}); send a JSON object"
        else:
            result = run_call(tools, f["name"], args)
        runs.append(ToolRun(f["name"], f["arguments"], result, time.perf_counter() - t0))
    runs += [ToolRun("", "", f"error: {e}", 0.0) for e in reply.errors]  # malformed calls, fed back
    return runs


def _appended(mode: str, reply: Reply, runs: list[ToolRun]) -> list[dict]:
    """The messages a step adds to the conversation."""
    if mode == "react":
        text = reply.content
        if reply.tool_calls:
            f = reply.tool_calls[0]["function"]
            text = (text + "\n" if text else "") + f"Action: {f['name']}\nAction Input: {f['arguments']}"
        obs = "\n".join(f"Observation: {r.result}" for r in runs)
        return [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
    msg: dict = {"role": "assistant", "content": reply.content or None}
    if not reply.tool_calls:  # only malformed calls: the model reads what was wrong as a user turn
        msg["content"] = reply.content or "(malformed tool call)"
        return [msg, {"role": "user", "content": "\n".join(r.result for r in runs)}]
    msg["tool_calls"] = reply.tool_calls
    results = [
        {"role": "tool", "tool_call_id": c["id"], "name": r.name, "content": r.result}
        for c, r in zip(reply.tool_calls, runs)
    ]
    return [msg, *results]


def _stuck(signatures: list[tuple]) -> bool:
    """The same calls with the same results a third time, or steps alternating A, B, A, B."""
    last = signatures[-1]
    if signatures.count(last) >= 3:
        return True
    s = signatures[-4:]
    return len(s) == 4 and s[0] == s[2] and s[1] == s[3] and s[0] != s[1]


# ---- the loop ---------------------------------------------------------------------------------------------


def run_agent(
    task: str,
    model,
    tools: Sequence[Tool | str] = (),
    *,
    model_name: str | None = None,
    mode: str = "function",
    max_steps: int = 8,
    max_wall_s: float = 60.0,
    max_tokens: int | None = None,
    system: str | None = None,
    trace: str | Path | None = None,
    on_step: Callable[[Step], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    **model_kw,
) -> AgentResult:
    """Run the task to an answer or a limit (see the module docstring); `UserError` for bad settings."""
    if not isinstance(max_steps, int) or max_steps < 1:
        raise UserError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if not max_wall_s > 0:
        raise UserError(f"max_wall_s must be > 0, got {max_wall_s!r}")
    if mode not in MODES:
        raise UserError(f"mode: unknown agent mode {mode!r}; choose one of {', '.join(MODES)}")
    tools = get_tools(list(tools))
    chat = as_chat_model(model, model_name, **model_kw)
    schemas = [t.schema for t in tools]
    messages: list[dict] = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": task}
    ]
    out = _Trace(trace)
    out.write(
        {
            "type": "start",
            "task": task,
            "mode": mode,
            "tools": [t.name for t in tools],
            "max_steps": max_steps,
        }
    )
    t_start, steps, signatures, tokens = clock(), [], [], 0

    def ask(msgs: list[dict], with_tools: bool) -> Reply:
        if mode == "react":
            return parse_react_reply(chat.complete(_react_messages(msgs, tools), None))
        return chat.complete(msgs, schemas if with_tools and schemas else None)

    answer, reason = None, "max_steps"
    try:
        for i in range(max_steps):
            if clock() - t_start > max_wall_s:
                reason = "timeout"
                break
            t0 = clock()
            reply = ask(messages, with_tools=True)
            runs = _run_calls(reply, tools)
            step = Step(i, reply.content, runs, clock() - t0, reply.tokens, final=not runs)
            tokens += reply.tokens
            added = (
                [{"role": "assistant", "content": reply.content}]
                if step.final
                else _appended(mode, reply, runs)
            )
            messages += added
            steps.append(step)
            out.write({"type": "step", **asdict(step), "messages": added})
            if on_step:
                on_step(step)
            if step.final:
                answer, reason = reply.content, "final_answer"
                break
            signatures.append(tuple((r.name, r.arguments, r.result) for r in runs))
            if _stuck(signatures):
                reason = "stuck"
                break
            if max_tokens is not None and tokens > max_tokens:
                reason = "max_tokens"
                break
        else:  # the step limit: one forced final answer, tools withdrawn
            t0 = clock()
            forced = [*messages, {"role": "user", "content": FORCE_FINAL}]
            reply = ask(forced, with_tools=False)
            tokens += reply.tokens
            answer = reply.content
            step = Step(max_steps, reply.content, [], clock() - t0, reply.tokens, final=True)
            steps.append(step)
            messages += [*forced[-1:], {"role": "assistant", "content": reply.content}]
            out.write({"type": "step", **asdict(step), "messages": messages[-2:], "forced": True})
            if on_step:
                on_step(step)
        wall = clock() - t_start
        out.write(
            {"type": "end", "answer": answer, "stopped_because": reason, "tokens": tokens, "wall_s": wall}
        )
    finally:
        out.close()
    return AgentResult(answer, steps, reason, messages, tokens, wall)


def parse_react_reply(reply: Reply) -> Reply:
    """A model's ReAct text (in `reply.content`) → the Reply it stands for, keeping the token count."""
    parsed = parse_react(reply.content)
    parsed.tokens = reply.tokens
    return parsed
