"""The chat template: a conversation → token ids and a loss mask.

A conversation is a list of OpenAI-style messages, `{"role": "system"|"user"|"assistant"|"tool",
"content": str}`; an assistant message may carry `"tool_calls": [{"name": ..., "arguments": {...}}]`
(or OpenAI's `{"type": "function", "function": {"name", "arguments"}}`), a tool message an optional
`"name"` and `"tool_call_id"` (results follow the calls in order, so the id is not rendered). Template
"llmlab-v2" writes every turn as a role header, its content, and `<|end|>`:

    <|bos|>
    <|system|>You are terse.<|end|>                                       (optional, first only)
    <|user|>What is 2 + 2?<|end|>
    <|assistant|> 4<|end|>                                                 ← trained on: " 4<|end|>"
    <|user|>And the weather in Oslo?<|end|>
    <|assistant|><|tool_call|>{"name": "weather", "arguments": {"city": "Oslo"}}<|/tool_call|><|end|>
    <|tool|>weather<|tool_result|>{"temp": 3}<|/tool_result|><|end|>       ← never trained on
    <|assistant|> 3 °C.<|end|>

The assistant's content is written after one space (SentencePiece's dummy prefix, for the same
reason): a word at the start of a text is other tokens than the same word after a space (`bunuvim`
→ `b un uv im`, ` bunuvim` → ` b un uv im`), so a reply that opens by repeating a word of the prompt
would first have to translate it. With the space, the reply's first word is the prompt's tokens and
the copy is a plain copy (docs/speedrun.md, "A reply starts after a space"). `parse_assistant`, the
server and `llmlab chat` drop that space again: what the user sees is the content as given.

Tools the model may call (`tools=[...]`, OpenAI's `{"type": "function", "function": {...}}` schemas)
are written into the system turn, after its text, one JSON schema a line under a `# Tools` heading
(a system turn holding only that block is added when the conversation has none):

    <|system|>You are terse.

    # Tools
    {"type": "function", "function": {"name": "weather", "description": ..., "parameters": ...}}<|end|>

A tool call's `arguments` may be an object or, as OpenAI sends them, a JSON string (written as it is).
`parse_assistant` turns the model's text back into `{"content", "tool_calls", "errors"}`.

SFT trains only on what the assistant writes. With the loss mask m_t ∈ {0, 1} of each token,

    L = − Σ_t m_t · log p(x_t | x_<t) / Σ_t m_t,

where m_t = 1 exactly for assistant content, the tool calls it writes (delimiters included) and the
`<|end|>` that closes its turn: the model learns what to say *and when to stop*. The `<|assistant|>`
header itself is given (`render_for_generation` ends with it), and system, user and tool-result text
are conditioning only.

Text between special tokens is encoded with `encode_ordinary`, so a user typing "<|end|>" gets the
literal characters, never the control token. `CHAT_TEMPLATE_JINJA` is the same template for Hugging
Face's `apply_chat_template` (the HF export writes it into tokenizer_config.json); the tests check that
both give the same ids, and the same assistant mask through `{% generation %}`.
"""

from __future__ import annotations

import json
from typing import Any

from llmlab.errors import UserError

TEMPLATE_NAME = "llmlab-v2"
ROLES = ("system", "user", "assistant", "tool")
HEADERS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|tool|>"}
BOS, END = "<|bos|>", "<|end|>"
TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
TOOL_RESULT, TOOL_RESULT_END = "<|tool_result|>", "<|/tool_result|>"
STOP_TOKENS = [END, BOS]  # generation of an assistant turn ends at either
REPLY_PREFIX = " "  # written before the assistant's content (the dummy prefix above)

# The same rendering in Jinja (for HF's apply_chat_template). Written without newlines so that no
# whitespace leaks into the text; `{% generation %}` marks the tokens SFT trains on.
CHAT_TEMPLATE_JINJA = (
    "{%- macro tool_block() -%}# Tools"
    "{%- for t in tools -%}{{ '\\n' }}{{ t | tojson }}{%- endfor -%}{%- endmacro -%}"
    "<|bos|>"
    "{%- if tools and messages[0]['role'] != 'system' -%}<|system|>{{ tool_block() }}<|end|>{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}<|system|>{{ m['content'] }}"
    "{%- if tools -%}{%- if m['content'] -%}{{ '\\n\\n' }}{%- endif -%}{{ tool_block() }}{%- endif -%}<|end|>"
    "{%- elif m['role'] == 'user' -%}<|user|>{{ m['content'] }}<|end|>"
    "{%- elif m['role'] == 'assistant' -%}<|assistant|>{% generation %}"
    "{%- if m['content'] -%}{{ ' ' + m['content'] }}{%- endif -%}"
    "{%- for tc in (m['tool_calls'] if m['tool_calls'] is defined and m['tool_calls'] else []) -%}"
    "{%- set f = tc['function'] if tc['function'] is defined else tc -%}"
    '<|tool_call|>{"name": {{ f[\'name\'] | tojson }}, "arguments": '
    "{% if f['arguments'] is string %}{{ f['arguments'] }}{% else %}{{ f['arguments'] | tojson }}{% endif %}"
    "}<|/tool_call|>"
    "{%- endfor -%}<|end|>{% endgeneration %}"
    "{%- elif m['role'] == 'tool' -%}<|tool|>"
    "{%- if m['name'] is defined and m['name'] -%}{{ m['name'] }}{%- endif -%}"
    "<|tool_result|>{{ m['content'] }}<|/tool_result|><|end|>"
    "{%- else -%}{{ raise_exception('unknown role: ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

# Which roles may follow which (an assistant that made tool calls may also be followed by "tool").
_NEXT = {
    None: ("system", "user"),
    "system": ("user",),
    "user": ("assistant",),
    "assistant": ("user",),
    "tool": ("tool", "assistant"),
}

# A segment of the rendered conversation: (text, is_special, trained_on).
Segment = tuple[str, bool, bool]


def tool_call_json(call: dict) -> str:
    """`{"name": ..., "arguments": ...}` as JSON (json.dumps defaults, as Jinja's tojson); arguments
    given as a JSON string (OpenAI's wire form) are written as they are."""
    f = call.get("function", call)
    args = f.get("arguments")
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return '{"name": ' + json.dumps(f.get("name"), ensure_ascii=False) + ', "arguments": ' + args_text + "}"


def tool_block(tools: list[dict]) -> str:
    """The tools as the system turn lists them: `# Tools` and one JSON schema a line."""
    return "# Tools" + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise UserError("tools: expected a list of tool schemas (objects)")
    for i, t in enumerate(tools):
        if not isinstance(t.get("function", t).get("name"), str):
            raise UserError(f"tools[{i}]: a tool schema needs a string 'name' (under 'function')")


def validate(messages: Any, for_generation: bool = False) -> None:
    """Check roles and contents; raise `UserError("message i: ...")` on the first problem.

    Order: an optional system message first, then user; a user is followed by an assistant; an
    assistant by a user, or by tool results when it made tool calls; tool results by more tool
    results or an assistant. Training conversations end with an assistant turn; conversations to
    generate from end with a user or tool turn.
    """
    if not isinstance(messages, list) or not messages:
        raise UserError("conversation: expected a non-empty list of messages")
    prev = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserError(
                f"message {i}: expected an object with 'role' and 'content', got {type(m).__name__}"
            )
        role = m.get("role")
        if role not in ROLES:
            raise UserError(f"message {i}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        content = m.get("content")
        calls = m.get("tool_calls") or []
        if content is not None and not isinstance(content, str):
            raise UserError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
        if role == "assistant":
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise UserError(f"message {i} (assistant): tool_calls must be a list of objects")
            for c in calls:
                if not isinstance(c.get("function", c).get("name"), str):
                    raise UserError(f"message {i} (assistant): each tool call needs a string 'name'")
            if not content and not calls:
                raise UserError(f"message {i}: empty assistant turn; give it content or tool_calls")
        elif content is None:
            raise UserError(f"message {i} ({role}): missing 'content'")
        allowed = _NEXT[prev]
        if prev == "assistant" and messages[i - 1].get("tool_calls"):
            allowed = ("user", "tool")
        if role not in allowed:
            after = f"after a {prev} message" if prev else "at the start"
            raise UserError(
                f"message {i}: a {role} message cannot come {after} (expected {' or '.join(allowed)}); "
                "roles must alternate user/assistant, with tool results only after tool calls"
            )
        prev = role
    last = messages[-1]["role"]
    if for_generation and last not in ("user", "tool"):
        raise UserError(
            f"message {len(messages) - 1}: to generate a reply the conversation must end with a "
            f"user or tool message, not {last}"
        )
    if not for_generation and last != "assistant":
        raise UserError(
            f"message {len(messages) - 1}: a training conversation must end with an assistant "
            f"turn, not {last}"
        )


def segments(
    messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
) -> list[Segment]:
    """The conversation as (text, is_special, trained_on) pieces, in order (no validation)."""
    out: list[Segment] = [(BOS, True, False)]
    if tools and messages[0]["role"] != "system":
        out += [(HEADERS["system"], True, False), (tool_block(tools), False, False), (END, True, False)]
    for m in messages:
        role = m["role"]
        out.append((HEADERS[role], True, False))
        if role == "system" and tools:
            text = m["content"] + ("\n\n" if m["content"] else "") + tool_block(tools)
            out += [(text, False, False), (END, True, False)]
        elif role == "assistant":
            if m.get("content"):
                out.append((REPLY_PREFIX + m["content"], False, True))
            for call in m.get("tool_calls") or []:
                out += [
                    (TOOL_CALL, True, True),
                    (tool_call_json(call), False, True),
                    (TOOL_CALL_END, True, True),
                ]
            out.append((END, True, True))
        elif role == "tool":
            if m.get("name"):
                out.append((m["name"], False, False))
            out += [
                (TOOL_RESULT, True, False),
                (m["content"], False, False),
                (TOOL_RESULT_END, True, False),
                (END, True, False),
            ]
        else:
            out += [(m["content"], False, False), (END, True, False)]
    if add_generation_prompt:
        out.append((HEADERS["assistant"], True, False))
    return out


def render_text(
    messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
) -> str:
    """The conversation as one string, special tokens written out (what the Jinja template gives)."""
    return "".join(text for text, _, _ in segments(messages, add_generation_prompt, tools))


def _encode(tok, segs: list[Segment]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []
    for text, special, trained in segs:
        if special:
            if text not in tok.special_tokens:
                raise UserError(
                    f"tokenizer has no {text} special token; train the tokenizer with the default "
                    "special tokens to use the chat template"
                )
            piece = [tok.special_tokens[text]]
        else:
            piece = tok.encode_ordinary(text)
        ids += piece
        mask += [int(trained)] * len(piece)
    return ids, mask


def render_chat(tok, messages: list[dict], tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a training conversation and its loss mask (1 = trained on), same length.

    The mask is 1 on assistant content, its tool calls and its closing `<|end|>`; 0 elsewhere."""
    validate(messages, for_generation=False)
    if tools:
        _check_tools(tools)
    return _encode(tok, segments(messages, tools=tools))


def render_for_generation(tok, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of a conversation ending with `<|assistant|>`: the prompt for the model's reply."""
    validate(messages, for_generation=True)
    if tools:
        _check_tools(tools)
    return _encode(tok, segments(messages, add_generation_prompt=True, tools=tools))[0]


def parse_tool_call(call_text: str) -> tuple[str, dict]:
    """The JSON between `<|tool_call|>` and `<|/tool_call|>` → (name, arguments); `ValueError` saying
    what is wrong when it is not `{"name": str, "arguments": object}` (arguments may be omitted)."""
    try:
        call = json.loads(call_text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise ValueError('expected {"name": "...", "arguments": {...}}')
    args = call.get("arguments", {})
    if isinstance(args, str):  # a model that learned OpenAI's wire form
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise ValueError("arguments is a string that is not JSON") from None
    if not isinstance(args, dict):
        raise ValueError(f"arguments must be an object, got {type(args).__name__}")
    return call["name"], args


def parse_assistant(text: str, id_prefix: str = "call_") -> dict:
    """The model's reply text (special tokens written out) → `{"content", "tool_calls", "errors"}`.

    Each well-formed `<|tool_call|>{json}<|/tool_call|>` becomes an OpenAI tool call
    `{"id": id_prefix + k, "type": "function", "function": {"name", "arguments": json string}}`; text
    outside calls is the content (stripped; "" when there is none). A malformed call (bad JSON, no
    name, never closed) stays in the content as written and adds a line to `errors`; nothing raises.
    """
    text = text.removesuffix(END)
    content: list[str] = []
    calls: list[dict] = []
    errors: list[str] = []
    rest = text
    while TOOL_CALL in rest:
        before, _, after = rest.partition(TOOL_CALL)
        content.append(before)
        if TOOL_CALL_END not in after:
            errors.append(f"tool call {len(calls) + len(errors) + 1}: never closed with {TOOL_CALL_END}")
            content.append(TOOL_CALL + after)
            rest = ""
            break
        body, _, rest = after.partition(TOOL_CALL_END)
        try:
            name, args = parse_tool_call(body)
        except ValueError as e:
            errors.append(f"tool call {len(calls) + len(errors) + 1}: {e}")
            content.append(TOOL_CALL + body + TOOL_CALL_END)
            continue
        fn = {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}
        calls.append({"id": f"{id_prefix}{len(calls)}", "type": "function", "function": fn})
    content.append(rest)
    return {"content": "".join(content).strip(), "tool_calls": calls, "errors": errors}
