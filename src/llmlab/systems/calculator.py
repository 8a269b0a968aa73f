"""The calculator tool: arithmetic from an AST allow-list, never `eval`.

    calculator("2 + 3 * (4 - 1)")  → "11"        calculator("7 / 2")  → "3.5"
    calculator("__import__('os')") → "error: calls are limited to abs, ceil, ..."

What is allowed: int and float literals, + − × ÷ // % and **, parentheses, unary + and −, the names
`pi` and `e`, and the functions in `FUNCTIONS`. Everything else (names, attributes, subscripts,
strings, comprehensions, lambdas) is refused with a message. Work is bounded before it is done:

    the text        ≤ MAX_CHARS characters (10,000-deep parentheses are refused before parsing)
    nesting depth   ≤ MAX_DEPTH nodes
    a literal       ≤ MAX_DIGITS digits
    a power a**b    |b| ≤ MAX_EXPONENT, and the result's digits b·log10|a| ≤ MAX_RESULT_DIGITS
    any result      ≤ MAX_RESULT_DIGITS digits (so a chain of products cannot grow without bound)

so `9**9**9` is refused at once (9**387420489 would have 370 million digits).
"""

from __future__ import annotations

import ast
import math
import operator

MAX_CHARS = 500
MAX_DEPTH = 40
MAX_DIGITS = 40
MAX_EXPONENT = 1000
MAX_RESULT_DIGITS = 300

FUNCTIONS = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalcError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is for the model."""


def _check_size(x: float) -> float:
    if isinstance(x, int) and abs(x) >= 10**MAX_RESULT_DIGITS:
        raise CalcError(f"result has more than {MAX_RESULT_DIGITS} digits")
    return x


def _power(a: float, b: float) -> float:
    if abs(b) > MAX_EXPONENT:
        raise CalcError(f"exponent {b} is too large (at most {MAX_EXPONENT})")
    if abs(a) > 1 and b > 0 and b * math.log10(abs(a)) > MAX_RESULT_DIGITS:
        raise CalcError(f"{a} ** {b} would have more than {MAX_RESULT_DIGITS} digits")
    out = a**b
    if isinstance(out, complex):
        raise CalcError(f"{a} ** {b} is not a real number")
    return out


def _eval(node: ast.AST, depth: int) -> float:
    if depth > MAX_DEPTH:
        raise CalcError(f"expression nested more than {MAX_DEPTH} deep")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CalcError(f"only numbers are allowed, got {v!r}")
        return v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(a, b))
        if type(node.op) not in _BINARY:
            raise CalcError(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        return _check_size(_BINARY[type(node.op)](a, b))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalcError(f"unknown name {node.id!r}; only pi and e are defined")
    if isinstance(node, ast.Call):
        fn = node.func.id if isinstance(node.func, ast.Name) else None
        if fn not in FUNCTIONS or node.keywords:
            raise CalcError(f"calls are limited to {', '.join(FUNCTIONS)} with positional arguments")
        if fn in ("min", "max") and not node.args:
            raise CalcError(f"{fn} needs at least one argument")
        return _check_size(FUNCTIONS[fn](*[_eval(a, depth + 1) for a in node.args]))
    raise CalcError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _literal_digits(text: str) -> None:
    longest = max((len(run) for run in "".join(c if c.isdigit() else " " for c in text).split()), default=0)
    if longest > MAX_DIGITS:
        raise CalcError(f"a number has {longest} digits (at most {MAX_DIGITS})")


def format_number(x: float) -> str:
    """An int as it is; a float with 12 significant digits, integral ones without '.0' ("6", "3.5")."""
    if isinstance(x, int):
        return str(x)
    if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return format(x, ".12g")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression; `CalcError` saying why it is refused."""
    if not isinstance(expression, str):
        raise CalcError(f"expected an expression as a string, got {type(expression).__name__}")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    if len(text) > MAX_CHARS:
        raise CalcError(f"expression is {len(text)} characters (at most {MAX_CHARS})")
    _literal_digits(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise CalcError(f"not an arithmetic expression ({getattr(e, 'msg', e)})") from None
    try:
        return _eval(tree, 0)
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except (OverflowError, ValueError, TypeError) as e:
        if isinstance(e, CalcError):
            raise
        raise CalcError(f"{type(e).__name__}: {e}") from None


def calculate(expression: str) -> str:
    """The value as text, or `error: ...` (what the model reads back either way)."""
    try:
        return format_number(evaluate(expression))
    except CalcError as e:
        return f"error: {e}"
