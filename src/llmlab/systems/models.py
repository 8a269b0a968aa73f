"""The models an agent can drive, behind one method: `complete(messages, tools) -> Reply`.

    LocalModel(model, tok)                    our model through the engine and the chat template
    OpenAIModel(client, model_name)           any OpenAI-compatible endpoint through the official client
    FunctionModel(fn)                         fn(messages, tools) -> str | dict: scripted replies (tests)

`as_chat_model(x, model_name)` picks the adapter: a (model, tok) pair, an `openai.OpenAI` client (or
anything with `.chat.completions.create`), a callable, or an object that already has `complete`.
A Reply is OpenAI-shaped: content, tool_calls ([{"id", "type", "function": {"name", "arguments"}}]),
errors (malformed calls the model wrote) and the tokens it cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from llmlab.errors import UserError
from llmlab.tokenizer.chat import parse_assistant


@dataclass
class Reply:
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tokens: int = 0


class LocalModel:
    """Our model: the conversation rendered with the chat template (tools in the system turn), greedy
    or sampled through the engine, the reply parsed back with `parse_assistant`."""

    def __init__(self, model, tok, max_new_tokens: int = 256, temperature: float = 0.0, seed: int = 0):
        from llmlab.generate import Engine

        self.tok, self.engine = tok, Engine(model, tok)
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.calls = 0

    def complete(self, messages: list[dict], tools: list[dict] | None) -> Reply:
        from llmlab.generate import SamplingParams

        ids = self.tok.render_for_generation(messages, tools=tools or None)
        ids = ids[-(self.engine.max_len - self.max_new_tokens) :] if len(ids) > self.engine.max_len else ids
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed + self.calls
        )
        self.calls += 1
        out = self.engine.generate_ids([ids], params)[0]
        parsed = parse_assistant(out.text, id_prefix=f"call_{self.calls}_")
        tokens = len(ids) + len(out.token_ids)
        return Reply(parsed["content"], parsed["tool_calls"], parsed["errors"], tokens)


class OpenAIModel:
    """An OpenAI-compatible chat endpoint (`openai.OpenAI(base_url=..., api_key=...)`)."""

    def __init__(self, client, model_name: str, max_new_tokens: int = 512, temperature: float = 0.0):
        self.client, self.model_name = client, model_name
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def complete(self, messages: list[dict], tools: list[dict] | None) -> Reply:
        kw = dict(model=self.model_name, messages=messages, max_tokens=self.max_new_tokens)
        kw["temperature"] = self.temperature
        if tools:
            kw["tools"] = tools
        try:
            resp = self.client.chat.completions.create(**kw)
        except Exception as e:
            if type(e).__name__ in ("APIConnectionError", "APITimeoutError"):
                url = getattr(self.client, "base_url", "?")
                raise UserError(f"--base-url {url}: cannot reach the server ({e})") from None
            raise
        msg = resp.choices[0].message
        calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"},
            }
            for c in (msg.tool_calls or [])
        ]
        usage = getattr(resp, "usage", None)
        return Reply(msg.content or "", calls, [], getattr(usage, "total_tokens", 0) or 0)


class FunctionModel:
    """Replies from a function (`fn(messages, tools) -> str | dict`): a string is parsed like our
    model's text (tool-call tokens included); a dict gives content / tool_calls directly."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def complete(self, messages: list[dict], tools: list[dict] | None) -> Reply:
        out = self.fn(messages, tools)
        if isinstance(out, str):
            p = parse_assistant(out)
            return Reply(p["content"], p["tool_calls"], p["errors"], len(out.split()))
        calls = []
        for i, c in enumerate(out.get("tool_calls") or []):
            f = c.get("function", c)
            args = f.get("arguments", {})
            args = args if isinstance(args, str) else json.dumps(args)
            calls.append(
                {
                    "id": c.get("id", f"call_{i}"),
                    "type": "function",
                    "function": {"name": f["name"], "arguments": args},
                }
            )
        return Reply(out.get("content") or "", calls, list(out.get("errors", [])), int(out.get("tokens", 0)))


def as_chat_model(model, model_name: str | None = None, **kw):
    """The adapter for `model` (see the module docstring); `UserError` for anything else."""
    if hasattr(model, "complete"):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return LocalModel(*model, **kw)
    if hasattr(model, "chat") and hasattr(model.chat, "completions"):
        if not model_name:
            raise UserError("model_name: an OpenAI-compatible client needs the model's name (--model-name)")
        return OpenAIModel(model, model_name, **kw)
    if callable(model):
        return FunctionModel(model)
    raise UserError(
        f"model: expected (model, tokenizer), an openai.OpenAI client or a function, got {type(model).__name__}"
    )
