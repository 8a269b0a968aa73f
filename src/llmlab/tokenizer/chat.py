"""The chat template: a conversation → token ids and a loss mask.

A conversation is a list of OpenAI-style messages, `{"role": "system"|"user"|"assistant"|"tool",
"content": str}`; an assistant message may carry `"tool_calls": [{"name": ..., "arguments": {...}}]`
(or OpenAI's `{"type": "function", "function": {"name", "arguments"}}`), a tool message an optional
`"name"`. Template "llmlab-v1" writes every turn as a role header, its content, and `<|end|>`:

    <|bos|>
    <|system|>You are terse.<|end|>                                       (optional, first only)
    <|user|>What is 2 + 2?<|end|>
    <|assistant|>4<|end|>                                                  ← trained on: "4<|end|>"
    <|user|>And the weather in Oslo?<|end|>
    <|assistant|><|tool_call|>{"name": "weather", "arguments": {"city": "Oslo"}}<|/tool_call|><|end|>
    <|tool|>weather<|tool_result|>{"temp": 3}<|/tool_result|><|end|>       ← never trained on
    <|assistant|>3 °C.<|end|>

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

TEMPLATE_NAME = "llmlab-v1"
ROLES = ("system", "user", "assistant", "tool")
HEADERS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|tool|>"}
BOS, END = "<|bos|>", "<|end|>"
TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
TOOL_RESULT, TOOL_RESULT_END = "<|tool_result|>", "<|/tool_result|>"
STOP_TOKENS = [END, BOS]  # generation of an assistant turn ends at either

# The same rendering in Jinja (for HF's apply_chat_template). Written without newlines so that no
# whitespace leaks into the text; `{% generation %}` marks the tokens SFT trains on.
CHAT_TEMPLATE_JINJA = (
    "<|bos|>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}<|system|>{{ m['content'] }}<|end|>"
    "{%- elif m['role'] == 'user' -%}<|user|>{{ m['content'] }}<|end|>"
    "{%- elif m['role'] == 'assistant' -%}<|assistant|>{% generation %}"
    "{%- if m['content'] -%}{{ m['content'] }}{%- endif -%}"
    "{%- for tc in (m['tool_calls'] if m['tool_calls'] is defined and m['tool_calls'] else []) -%}"
    "{%- set f = tc['function'] if tc['function'] is defined else tc -%}"
    "<|tool_call|>{{ {'name': f['name'], 'arguments': f['arguments']} | tojson }}<|/tool_call|>"
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
    """`{"name": ..., "arguments": ...}` as compact-ish JSON (json.dumps defaults, as Jinja's tojson)."""
    f = call.get("function", call)
    return json.dumps({"name": f.get("name"), "arguments": f.get("arguments")}, ensure_ascii=False)


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


def segments(messages: list[dict], add_generation_prompt: bool = False) -> list[Segment]:
    """The conversation as (text, is_special, trained_on) pieces, in order (no validation)."""
    out: list[Segment] = [(BOS, True, False)]
    for m in messages:
        role = m["role"]
        out.append((HEADERS[role], True, False))
        if role == "assistant":
            if m.get("content"):
                out.append((m["content"], False, True))
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


def render_text(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as one string, special tokens written out (what the Jinja template gives)."""
    return "".join(text for text, _, _ in segments(messages, add_generation_prompt))


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


def render_chat(tok, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of a training conversation and its loss mask (1 = trained on), same length.

    The mask is 1 on assistant content, its tool calls and its closing `<|end|>`; 0 elsewhere."""
    validate(messages, for_generation=False)
    return _encode(tok, segments(messages))


def render_for_generation(tok, messages: list[dict]) -> list[int]:
    """Token ids of a conversation ending with `<|assistant|>`: the prompt for the model's reply."""
    validate(messages, for_generation=True)
    return _encode(tok, segments(messages, add_generation_prompt=True))[0]
