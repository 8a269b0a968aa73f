"""Tool schemas from signatures, argument validation, the calculator's allow-list and caps, read_file."""

from __future__ import annotations

import os
from typing import Literal

import pytest

from llmlab.errors import UserError
from llmlab.systems import tools
from llmlab.systems.calculator import calculate
from llmlab.systems.tools import calculator, get_tools, make_read_file, run_call, tool


def weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current weather for a city.

    Args:
        city: the city's name
        unit: temperature unit
    """
    return f"3 {unit} in {city}"


def many(
    n: int, x: float, flag: bool, tags: list[str], note: str | None = None, level: int | None = 2
) -> str:
    """Do many things.

    Longer text on a second line.

    Args:
        n (int): how many
        x: a number that
            wraps onto a second line
        flag: on or off
        tags: labels

    Returns:
        nothing useful
    """
    return "ok"


def nodoc_args(a: list[int]) -> int:
    """Sum."""
    return sum(a)


SCHEMAS = [
    (
        weather,
        {
            "name": "weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name"},
                    "unit": {
                        "type": "string",
                        "enum": ["c", "f"],
                        "description": "temperature unit",
                        "default": "c",
                    },
                },
                "required": ["city"],
            },
        },
    ),
    (
        many,
        {
            "name": "many",
            "description": "Do many things. Longer text on a second line.",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "description": "how many"},
                    "x": {"type": "number", "description": "a number that wraps onto a second line"},
                    "flag": {"type": "boolean", "description": "on or off"},
                    "tags": {"type": "array", "items": {"type": "string"}, "description": "labels"},
                    "note": {"type": "string"},
                    "level": {"type": "integer", "default": 2},
                },
                "required": ["n", "x", "flag", "tags"],
            },
        },
    ),
    (
        nodoc_args,
        {
            "name": "nodoc_args",
            "description": "Sum.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
                "required": ["a"],
            },
        },
    ),
]


@pytest.mark.parametrize(("func", "expected"), SCHEMAS, ids=[f.__name__ for f, _ in SCHEMAS])
def test_schema_equals_the_hand_written_json(func, expected):
    t = tool(func)
    assert t.schema == {"type": "function", "function": expected}
    if func is weather:
        assert t("Oslo") == "3 c in Oslo"  # a Tool is still the function


def test_decorator_with_options_names_the_tool():
    t = tool(name="wx", max_output=5)(weather)
    assert t.name == "wx" and t.schema["function"]["name"] == "wx"
    assert t.run({"city": "Bergen"}).startswith("3 c i") and "truncated" in t.run({"city": "Bergen"})


def no_hint(city) -> str:
    """Doc."""


def star(*args: int) -> str:
    """Doc."""


def dict_arg(d: dict) -> str:
    """Doc."""


def no_doc(a: int) -> str:
    return ""


def mixed_literal(a: Literal["x", 1]) -> str:
    """Doc."""


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (no_hint, "parameter 'city': has no type annotation"),
        (star, "parameter 'args': \\*args and \\*\\*kwargs"),
        (dict_arg, "parameter 'd': type dict cannot be a tool argument"),
        (no_doc, "tool no_doc: has no docstring"),
        (mixed_literal, "Literal values must all be"),
    ],
)
def test_a_signature_that_cannot_be_a_schema_is_a_user_error(func, message):
    with pytest.raises(UserError, match=message):
        tool(func)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "weather: missing required argument 'city'"),
        ({"city": 3}, "weather: argument 'city' must be a string, got 3"),
        ({"city": "Oslo", "unit": "k"}, "weather: argument 'unit' must be one of \\['c', 'f'\\], got 'k'"),
        ({"city": "Oslo", "wind": True}, "weather: unknown argument 'wind'; the arguments are city, unit"),
        ([1], "weather: arguments must be an object, got list"),
    ],
)
def test_bad_arguments_come_back_as_the_validation_message(args, message):
    out = tool(weather).run(args)
    assert out.startswith("error: ")
    assert __import__("re").search(message, out), out


def test_nested_and_typed_validation():
    t = tool(many)
    assert "argument 'tags' item 1 must be a string, got 2" in t.run(
        {"n": 1, "x": 1.0, "flag": True, "tags": ["a", 2]}
    )
    assert "argument 'n' must be an integer, got True" in t.run({"n": True, "x": 1, "flag": True, "tags": []})
    assert t.run({"n": 1, "x": 2, "flag": False, "tags": [], "note": None}) == "ok"


def test_exceptions_and_non_string_results_become_text():
    def boom(a: int) -> int:
        """Fails."""
        raise RuntimeError("nope")

    def listing(a: int) -> list:
        """Lists."""
        return [a, "b"]

    assert tool(boom).run({"a": 1}) == "error: RuntimeError: nope"
    assert tool(listing).run({"a": 1}) == '[1, "b"]'


def test_a_slow_tool_times_out_as_an_error_result():
    import threading

    release = threading.Event()

    def slow(a: int) -> str:
        """Waits."""
        release.wait(5)
        return "late"

    try:
        assert tool(slow, timeout_s=0.05).run({"a": 1}) == "error: slow did not finish within 0.05 s"
    finally:
        release.set()


def test_run_call_reports_unknown_tools():
    assert run_call([calculator], "weather", {}) == "error: unknown tool 'weather'; the tools are calculator"
    assert run_call([calculator], "calculator", {"expression": "6*7"}) == "42"


def test_get_tools_by_name_and_unknown_name():
    assert [t.name for t in get_tools("calculator, python")] == ["calculator", "python"]
    with pytest.raises(UserError, match="unknown tool 'shell'; the built-in tools are calculator, python"):
        get_tools("calculator,shell")


# ---- the calculator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("2 + 3 * (4 - 1)", "11"),
        ("37 * 91 - 12", "3355"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ^ 10", "1024"),
        ("-(3 - 5)", "2"),
        ("+4", "4"),
        ("sqrt(16)", "4"),
        ("round(2.567, 2)", "2.57"),
        ("max(3, 9, 4)", "9"),
        ("abs(-2.5)", "2.5"),
        ("1 / 3", "0.333333333333"),
        ("pi", "3.14159265359"),
        ("12 × 3 ÷ 4", "9"),
        ("123456789 * 987654321", "121932631112635269"),
        ("2 ** -2", "0.25"),
    ],
)
def test_calculator_values(expr, value):
    assert calculator(expr) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os').system('id')", "calls are limited to"),
        ("(1).__class__", "Attribute is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("9**9**9", "exponent 387420489 is too large"),
        ("10 ** 400", "would have more than 300 digits"),
        ("(" * 10_000 + "1" + ")" * 10_000, "characters \\(at most 500\\)"),
        ("-(" * 60 + "1" + ")" * 60, "nested more than 40 deep"),
        ("1" * 1000, "characters|digits"),
        ("1" * 60, "a number has 60 digits"),
        ("1 / 0", "division by zero"),
        ("'a' * 3", "only numbers are allowed"),
        ("[1, 2]", "List is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("True + 1", "only numbers are allowed, got True"),
        ("1 < 2", "Compare is not allowed"),
        ("(-8) ** 0.5", "not a real number"),
        ("2.5 ** 900", "OverflowError|digits"),
        ("10**200 * 10**200", "more than 300 digits"),
        ("1 +", "not an arithmetic expression"),
    ],
)
def test_calculator_refusals(expr, message):
    out = calculator(expr)
    assert out.startswith("error: ")
    assert __import__("re").search(message, out), out


def test_calculator_never_evals(monkeypatch):
    import builtins

    def no_eval(*a, **k):
        raise AssertionError("eval was called")

    monkeypatch.setattr(builtins, "eval", no_eval)
    assert calculate("1 + 1") == "2"


# ---- read_file -----------------------------------------------------------------------------------------


def test_read_file_reads_inside_and_refuses_escapes(tmp_path):
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", ws / "link")
    os.symlink(tmp_path, ws / "dirlink")
    rf = make_read_file(ws)
    assert rf.run({"path": "sub/a.txt"}) == "inside"
    for path in (
        "../secret.txt",
        "sub/../../secret.txt",
        "link",
        "dirlink/secret.txt",
        str(tmp_path / "secret.txt"),
    ):
        assert "outside the workspace" in rf.run({"path": path}), path
    assert "no such file" in rf.run({"path": "missing.txt"})


def test_read_file_truncates_big_files(tmp_path):
    (tmp_path / "big.txt").write_text("z" * 100)
    assert (
        make_read_file(tmp_path, max_bytes=10).run({"path": "big.txt"}) == "z" * 10 + "\n[... file truncated]"
    )


def test_search_is_a_slot_until_an_index_is_wired(monkeypatch):
    assert "no search index is configured" in tools.search.run({"query": "q"})
    monkeypatch.setattr(tools, "_search_backend", lambda q, k: [f"{q}-{i}" for i in range(k)])
    assert tools.search.run({"query": "q", "k": 2}) == "[1] q-0\n\n[2] q-1"


def test_python_tool_runs_in_the_sandbox():
    from llmlab.systems import sandbox

    if sandbox.bwrap_path() is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    assert tools.python_tool.run({"code": "print(6 * 7)"}) == "42"
