"""A Python function's signature → a JSON schema for its arguments, and arguments checked against it.

    def weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.

        Args:
            city: the city's name
            unit: temperature unit
        '''
    →  {"type": "object",
        "properties": {"city": {"type": "string", "description": "the city's name"},
                       "unit": {"type": "string", "enum": ["c", "f"], "description": "temperature unit",
                                "default": "c"}},
        "required": ["city"]}

Types: str, int, float, bool, Literal[...] (of one of those), list[X], Optional[X] / X | None. A
parameter without a default is required. Anything else (no annotation, *args, dict, a class) is a
`UserError` naming the function and parameter: a tool's schema is what the model reads, so it must be
exact. `check_arguments` returns a one-line message for the first bad argument (or None).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable

from llmlab.errors import UserError

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SUPPORTED = "str, int, float, bool, Literal[...], list[...], Optional[...]"


def type_schema(tp: object, where: str) -> dict:
    """The JSON schema of one annotation (see the module docstring for what is supported)."""
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin is typing.Literal:
        kinds = {type(a) for a in targs}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
            raise UserError(f"{where}: Literal values must all be str, int, float or bool, got {targs}")
        return {"type": _SCALARS[next(iter(kinds))], "enum": list(targs)}
    if origin is list and len(targs) == 1:
        return {"type": "array", "items": type_schema(targs[0], where)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in targs if a is not type(None)]
        if len(rest) == 1 and len(targs) == 2:  # Optional[X]: the schema of X
            return type_schema(rest[0], where)
    name = getattr(tp, "__name__", repr(tp))
    raise UserError(f"{where}: type {name} cannot be a tool argument; use one of {_SUPPORTED}")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """A Google-style docstring → (description, {parameter: description}).

    The description is the text before the first section heading (`Args:`, `Returns:`, ...); under
    `Args:` each `name: text` or `name (type): text` starts a parameter, more-indented lines continue it."""
    lines = inspect.cleandoc(doc or "").splitlines()
    desc: list[str] = []
    params: dict[str, str] = {}
    section, current, indent = None, None, None
    for line in lines:
        heading = re.fullmatch(r"(\w[\w ]*):\s*", line)
        if heading and not line.startswith(" "):
            section, current = heading.group(1).lower(), None
            continue
        if section is None:
            desc.append(line)
        elif section in ("args", "arguments", "parameters"):
            m = re.match(r"(\s*)(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)
            if m and (indent is None or len(m.group(1)) <= indent):
                indent, current = len(m.group(1)), m.group(2)
                params[current] = m.group(3).strip()
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
    return " ".join(" ".join(desc).split()), params


def function_schema(func: Callable, name: str | None = None) -> dict:
    """`{"name", "description", "parameters"}` for `func`, from its type hints and docstring."""
    fname = name or func.__name__
    try:
        hints = typing.get_type_hints(func)
    except Exception as e:
        raise UserError(f"tool {fname}: its type hints cannot be read ({e})") from None
    description, docs = parse_docstring(func.__doc__)
    props: dict[str, dict] = {}
    required: list[str] = []
    for p in inspect.signature(func).parameters.values():
        where = f"tool {fname}, parameter '{p.name}'"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UserError(f"{where}: *args and **kwargs cannot be described to a model; name each argument")
        if p.name not in hints:
            raise UserError(f"{where}: has no type annotation; annotate it with one of {_SUPPORTED}")
        schema = type_schema(hints[p.name], where)
        if p.name in docs:
            schema["description"] = docs[p.name]
        if p.default is p.empty:
            required.append(p.name)
        elif p.default is not None:
            schema["default"] = p.default
        props[p.name] = schema
    if not description:
        raise UserError(f"tool {fname}: has no docstring; its first line tells the model what the tool does")
    return {
        "name": fname,
        "description": description,
        "parameters": {"type": "object", "properties": props, "required": required},
    }


def _type_error(schema: dict, value: object) -> str | None:
    """Why `value` does not fit `schema` (None when it does)."""
    kind = schema.get("type")
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
    }.get(kind, True)
    if not ok:
        return f"must be {'an' if kind in ('integer', 'array') else 'a'} {kind}, got {value!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {schema['enum']}, got {value!r}"
    if kind == "array":
        for i, item in enumerate(value):  # type: ignore[arg-type]
            if (err := _type_error(schema["items"], item)) is not None:
                return f"item {i} {err}"
    return None


def check_arguments(parameters: dict, args: object) -> str | None:
    """The first problem of `args` against an object schema, as one line; None when they fit."""
    if not isinstance(args, dict):
        return f"arguments must be an object, got {type(args).__name__}"
    props = parameters.get("properties", {})
    missing = [k for k in parameters.get("required", []) if k not in args]
    if missing:
        return f"missing required argument '{missing[0]}'"
    unknown = [k for k in args if k not in props]
    if unknown:
        return f"unknown argument '{unknown[0]}'; the arguments are {', '.join(props) or 'none'}"
    for key, value in args.items():
        if value is None and key not in parameters.get("required", []):
            continue  # an optional argument given as null: its default
        if (err := _type_error(props[key], value)) is not None:
            return f"argument '{key}' {err}"
    return None
