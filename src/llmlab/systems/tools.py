"""Tools a model can call: plain Python functions with a JSON schema, and the built-in ones.

    from llmlab.systems.tools import tool, calculator, run_python

    @tool
    def weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.

        Args:
            city: the city's name
            unit: temperature unit
        '''
        ...

    weather.schema        # {"type": "function", "function": {"name", "description", "parameters"}}
    weather("Oslo")       # a Tool is still the function
    weather.run({"city": 3})   # → "error: weather: argument 'city' must be a string, got 3"

`Tool.run(args)` is how a model's call is executed: the arguments are checked against the schema
first, and every failure (bad arguments, an exception, a timeout) comes back as an `error: ...` string
for the model to read, never as an exception. The result is text (non-strings as JSON), cut at
`max_output` characters with a marker.

Built-ins (`BUILTINS`, by name for `--tools calculator,python`): `calculator` (AST allow-list, see
`llmlab.systems.calculator`), `python` (the bubblewrap sandbox, `llmlab.systems.sandbox`),
`read_file` (inside a workspace: `..` and symlinks out of it refused) and `search` (retrieval: a slot
that `set_search_backend` fills; the RAG index plugs in there).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.systems.calculator import calculate
from llmlab.systems.sandbox import PythonResult, run_python
from llmlab.systems.schema import check_arguments, function_schema

__all__ = ["BUILTINS", "PythonResult", "Tool", "calculator", "get_tools", "run_python", "tool"]

TRUNCATED = "\n[... output truncated: {n} more characters]"


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a marker saying how much was dropped."""
    return text if len(text) <= limit else text[:limit] + TRUNCATED.format(n=len(text) - limit)


class Tool:
    """A function the model may call: its name, its schema, and a safe way to run a call."""

    def __init__(
        self,
        func: Callable,
        name: str | None = None,
        timeout_s: float | None = 30.0,
        max_output: int = 4000,
    ):
        spec = function_schema(func, name)
        self.func, self.name = func, spec["name"]
        self.description, self.parameters = spec["description"], spec["parameters"]
        self.timeout_s, self.max_output = timeout_s, max_output
        self.__doc__, self.__name__ = func.__doc__, self.name

    @property
    def schema(self) -> dict:
        """The OpenAI tool schema (what the chat template writes into the system turn)."""
        fn = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": fn}

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name})"

    def validate(self, args: Any) -> str | None:
        """Why `args` do not fit the schema (`"<name>: ..."`), or None."""
        err = check_arguments(self.parameters, args)
        return None if err is None else f"{self.name}: {err}"

    def run(self, args: Any) -> str:
        """Check the arguments, call the function (at most `timeout_s` seconds), return text."""
        if (err := self.validate(args)) is not None:
            return f"error: {err}"
        out: dict = {}

        def call() -> None:
            try:
                out["value"] = self.func(**args)
            except Exception as e:  # the model reads the failure and may try again
                out["error"] = f"{type(e).__name__}: {e}"

        if self.timeout_s is None:
            call()
        else:  # a thread cannot be killed: a timed-out call is abandoned (the sandbox kills its own)
            worker = threading.Thread(target=call, daemon=True)
            worker.start()
            worker.join(self.timeout_s)
            if worker.is_alive():
                return f"error: {self.name} did not finish within {self.timeout_s:g} s"
        if "error" in out:
            return f"error: {out['error']}"
        value = out.get("value")
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        return truncate(text, self.max_output)


def tool(
    func: Callable | None = None,
    *,
    name: str | None = None,
    timeout_s: float | None = 30.0,
    max_output: int = 4000,
):
    """Decorator: `@tool` or `@tool(name=..., timeout_s=..., max_output=...)` turns a typed, documented
    function into a `Tool` (a `UserError` when its signature cannot become a schema)."""

    def wrap(f: Callable) -> Tool:
        return Tool(f, name=name, timeout_s=timeout_s, max_output=max_output)

    return wrap(func) if func is not None else wrap


# ---- built-ins ---------------------------------------------------------------------------------------


@tool(timeout_s=None)
def calculator(expression: str) -> str:
    """Exact arithmetic: + - * / // % **, parentheses, sqrt, log.

    Args:
        expression: e.g. "417 * 36 - 7"
    """
    return calculate(expression)


@tool(name="python", timeout_s=None)
def python_tool(code: str) -> str:
    """Run a Python program in a sandbox (no network, a private workspace) and return what it prints.

    Args:
        code: the program; print what you want to see
    """
    return run_python(code, timeout_s=10.0).as_text()


def make_read_file(workspace: str | os.PathLike, max_bytes: int = 20_000) -> Tool:
    """A `read_file` tool that reads only inside `workspace` (resolved: `..` and symlinks that lead
    out of it are refused)."""
    root = Path(workspace).resolve()

    def read_file(path: str) -> str:
        """Read a text file from the workspace.

        Args:
            path: the file's path, relative to the workspace
        """
        target = (root / path).resolve()  # follows every symlink, so an escape shows in the result
        if target != root and root not in target.parents:
            return f"error: {path!r} is outside the workspace"
        if not target.is_file():
            return f"error: no such file in the workspace: {path!r}"
        with open(target, "rb") as f:
            data = f.read(max_bytes + 1)
        text = data[:max_bytes].decode("utf-8", errors="replace")
        return text + ("\n[... file truncated]" if len(data) > max_bytes else "")

    return Tool(read_file, timeout_s=10.0)


read_file = make_read_file(os.environ.get("LLMLAB_WORKSPACE", "."))

# The retrieval slot: the RAG index registers a function (query, k) -> list of passages here.
_search_backend: Callable[[str, int], Sequence[str]] | None = None


def set_search_backend(backend: Callable[[str, int], Sequence[str]] | None) -> None:
    """Wire the `search` tool to a retriever: `backend(query, k)` returns the k best passages."""
    global _search_backend
    _search_backend = backend


@tool(timeout_s=30.0)
def search(query: str, k: int = 3) -> str:
    """Search the document index and return the most relevant passages.

    Args:
        query: what to look for
        k: how many passages to return
    """
    if _search_backend is None:
        return "error: no search index is configured (build one with `llmlab rag`)"
    passages = list(_search_backend(query, k))
    return "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages)) or "no results"


BUILTINS: dict[str, Tool] = {
    "calculator": calculator,
    "python": python_tool,
    "read_file": read_file,
    "search": search,
}


def get_tools(names: str | Sequence[str | Tool] | None) -> list[Tool]:
    """Tools from names ("calculator,python" or a list; Tools pass through); `UserError` for an
    unknown name, listing the built-ins."""
    if names is None:
        return []
    items = [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else list(names)
    out = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif item in BUILTINS:
            out.append(BUILTINS[item])
        else:
            raise UserError(f"--tools: unknown tool {item!r}; the built-in tools are {', '.join(BUILTINS)}")
    return out


def run_call(tools: Sequence[Tool], name: str, args: Any) -> str:
    """Execute one tool call by name; an unknown name is an error result, not an exception."""
    by_name = {t.name: t for t in tools}
    if name not in by_name:
        return f"error: unknown tool {name!r}; the tools are {', '.join(by_name) or 'none'}"
    return by_name[name].run(args)
