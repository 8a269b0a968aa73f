"""A validated request body → what the engine runs: prompt ids, `SamplingParams`, n, the tool mode.

Checks that need the model happen here, each a 400 naming its field: the chat template's turn order
(`messages`), the context window (`messages`/`prompt`: the prompt alone is too long; `max_tokens`:
prompt + max_tokens > context, code `context_length_exceeded`), token ids in the vocabulary
(`prompt`, `logit_bias`, `stop_token_ids`), `n` ≤ the engine's rows, `tool_choice` naming a tool.

`tool_choice` (the model writes calls as `<|tool_call|>{"name": ..., "arguments": ...}<|/tool_call|>`):
    "none"       tools stay in the prompt; `<|tool_call|>` gets a logit bias of −100 (never sampled)
    "auto"       (the default with tools) the reply is parsed for calls
    "required"   `<|tool_call|>` is appended to the prompt: the reply starts inside a call
    a function   `<|tool_call|>{"name": "NAME", "arguments": ` is appended: the model writes the arguments
With "required" or a named function the reply ends at `<|/tool_call|>` (one call, as OpenAI's forced
choice gives); the forced text is parsed as if the model had written it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmlab.errors import UserError
from llmlab.generate import SamplingParams, default_stop_token_ids
from llmlab.generate.sampling import check_logit_bias
from llmlab.serve.errors import APIError, bad_field
from llmlab.serve.protocol import GREEDY_BELOW, ChatRequest, CompletionRequest, Message, NamedToolChoice

TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
MAX_PROMPTS = 64  # prompts in one completions request


@dataclass
class Job:
    """What one HTTP request asks of the engine: one engine request per prompt, n samples each."""

    prompts: list[list[int]]
    params: SamplingParams
    n: int
    parse_tools: bool = False  # split the reply into content and tool calls
    forced_text: str = ""  # text appended to the prompt that the reply continues (a forced tool call)
    tool_end_id: int | None = None  # stop token that closes a forced call (its text is put back)


@dataclass
class Limits:
    """What the server accepts: the engine's rows and context, and request sizes."""

    max_batch: int
    context: int
    vocab_size: int
    max_messages: int = 512


def chat_job(body: ChatRequest, tok, limits: Limits) -> Job:
    if len(body.messages) > limits.max_messages:
        raise APIError(
            413, f"messages: {len(body.messages)} messages, at most {limits.max_messages}", param="messages"
        )
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    try:
        prompt = tok.render_for_generation(template_messages(body.messages), tools=tools)
    except UserError as e:
        raise bad_field("messages", str(e)) from None
    specials = getattr(tok, "special_tokens", {})
    forced, bias, end_id = "", {}, None
    if (choice != "none" or tools) and (TOOL_CALL not in specials or TOOL_CALL_END not in specials):
        raise bad_field("tools", "this model's tokenizer has no tool-call tokens")
    if (choice in ("required", "auto") or isinstance(choice, NamedToolChoice)) and not tools:
        raise bad_field("tool_choice", f"{_choice_name(choice)} needs `tools`")
    if choice == "none" and tools:
        bias = {str(specials[TOOL_CALL]): -100.0}
    elif choice == "required" or isinstance(choice, NamedToolChoice):
        forced = TOOL_CALL
        if isinstance(choice, NamedToolChoice):
            names = [t["function"]["name"] for t in tools or []]
            if choice.function.name not in names:
                raise bad_field(
                    "tool_choice", f"no tool named {choice.function.name!r}; tools: {', '.join(names)}"
                )
            forced += '{"name": ' + json.dumps(choice.function.name) + ', "arguments": '
        prompt = [*prompt, specials[TOOL_CALL], *tok.encode_ordinary(forced[len(TOOL_CALL) :])]
        end_id = specials[TOOL_CALL_END]
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = sampling_params(body, tok, limits, [prompt], max_tokens, "messages", bias, end_id)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_field("top_logprobs", "needs `logprobs: true`")
    params.logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return Job([prompt], params, check_n(body.n, limits), bool(tools) and choice != "none", forced, end_id)


def completion_job(body: CompletionRequest, tok, limits: Limits) -> Job:
    raw = body.prompt
    if isinstance(raw, str) or (raw and all(isinstance(x, int) for x in raw)):
        raw = [raw]
    if not raw:
        raise bad_field("prompt", "an empty list; give a string, strings, token ids or lists of ids")
    if len(raw) > MAX_PROMPTS:
        raise bad_field("prompt", f"{len(raw)} prompts, at most {MAX_PROMPTS} in one request")
    prompts = [_prompt_ids(p, tok, limits.vocab_size) for p in raw]
    params = sampling_params(body, tok, limits, prompts, body.max_tokens, "prompt")
    params.logprobs, params.echo = body.logprobs, body.echo and body.logprobs is not None
    return Job(prompts, params, check_n(body.n, limits))


def template_messages(messages: list[Message]) -> list[dict]:
    """OpenAI messages → the chat template's dicts: text parts joined, `developer` as `system`, and a
    tool result named after the call it answers (the template writes the tool's name)."""
    out, names = [], {}
    for m in messages:
        content = m.content if not isinstance(m.content, list) else "".join(p.text for p in m.content)
        d = {"role": "system" if m.role == "developer" else m.role, "content": content}
        if m.tool_calls:
            d["tool_calls"] = [c.model_dump(exclude_none=True) for c in m.tool_calls]
            names.update({c.id: c.function.name for c in m.tool_calls if c.id})
        if m.role == "tool" and (m.name or m.tool_call_id in names):
            d["name"] = m.name or names[m.tool_call_id]
        out.append(d)
    return out


def sampling_params(
    body, tok, limits: Limits, prompts, max_tokens, prompt_field, bias=None, extra_stop=None
) -> SamplingParams:
    longest = max(len(p) for p in prompts)
    if longest > limits.context:
        raise APIError(
            400,
            f"{prompt_field}: the prompt is {longest} tokens but the context window is {limits.context}",
            param=prompt_field,
            code="context_length_exceeded",
        )
    if max_tokens is None:
        max_tokens = limits.context - longest
    elif longest + max_tokens > limits.context:
        raise APIError(
            400,
            f"max_tokens: {max_tokens} new tokens after a {longest}-token prompt exceed the context "
            f"window of {limits.context}; ask for at most {limits.context - longest}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return SamplingParams(
        max_new_tokens=max_tokens,
        temperature=_temperature(body.temperature),
        top_k=max(0, body.top_k or 0),
        # A top_p below float32's range rounds to 0 in the sampler and drops every token (NaN); any
        # p this small keeps only the most likely token, as 1e-6 does.
        top_p=1.0 if body.top_p is None else max(body.top_p, 1e-6),
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias={**_logit_bias(body.logit_bias, limits.vocab_size), **(bias or {})},
        seed=body.seed,
        stop=_stop_strings(body.stop),
        stop_token_ids=_stop_ids(body, tok, limits.vocab_size, extra_stop),
    )


def _temperature(t: float | None) -> float:
    if t is None:
        return 1.0
    return 0.0 if t < GREEDY_BELOW else t


def check_n(n: int, limits: Limits) -> int:
    if n > limits.max_batch:
        raise bad_field("n", f"{n} samples, but this server runs at most {limits.max_batch} rows at once")
    return n


def _choice_name(choice) -> str:
    return f"tool_choice {choice.function.name!r}" if isinstance(choice, NamedToolChoice) else repr(choice)


def _prompt_ids(prompt: str | list[int], tok, vocab_size: int) -> list[int]:
    if isinstance(prompt, str):
        ids = list(tok.encode(prompt, allowed_special="all"))
    else:
        bad = [i for i in prompt if not 0 <= i < vocab_size]
        if bad:
            raise bad_field("prompt", f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
        ids = list(prompt)
    if not ids:  # an empty prompt starts a document
        bos = getattr(tok, "special_tokens", {}).get("<|bos|>")
        if bos is None:
            raise bad_field("prompt", "empty; give at least one token")
        ids = [bos]
    return ids


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    if not bias:
        return {}
    try:
        checked = check_logit_bias(bias, vocab_size)
    except UserError as e:
        raise bad_field("logit_bias", str(e).removeprefix("logit_bias: ")) from None
    if any(not -100 <= v <= 100 for v in checked.values()):
        raise bad_field("logit_bias", "biases must be in [-100, 100]")
    return checked


def _stop_strings(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not s for s in stops):
        raise bad_field("stop", "stop strings must be non-empty")
    return stops


def _stop_ids(body, tok, vocab_size: int, extra: int | None) -> list[int] | None:
    """None (the engine's defaults: <|end|>, <|bos|>, ...) unless the request changes them."""
    asked = list(body.stop_token_ids or [])
    if any(not 0 <= i < vocab_size for i in asked):
        raise bad_field("stop_token_ids", f"ids must be in the vocabulary [0, {vocab_size})")
    if not asked and not body.ignore_eos and extra is None:
        return None
    base = [] if body.ignore_eos else default_stop_token_ids(tok)
    return base + asked + ([extra] if extra is not None else [])
