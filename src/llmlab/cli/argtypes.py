"""Argument types for every CLI flag that takes a number or a device: bad values are
rejected while parsing, as one line that names the flag, the value and what is allowed:

    llmlab eval: argument --limit: must be an integer >= 1, got '0' (see --help)

Every numeric flag uses one of these (tests/test_cli_args.py walks the parser to check), so a new
flag cannot take `type=int` and let 0 or -1 through to a traceback later.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

DEVICES = ("auto", "cpu", "cuda", "mps")


def _fail(allowed: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _fail(f"an integer >= {lo}", text) from None
        if value < lo:
            raise _fail(f"an integer >= {lo}", text)
        return value

    parse.__name__ = f"int_at_least_{lo}"
    return parse


def _float_where(allowed: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _fail(allowed, text) from None
        if not (math.isfinite(value) and ok(value)):
            raise _fail(allowed, text)
        return value

    parse.__name__ = allowed
    return parse


positive_int = _int_at_least(1)
nonneg_int = _int_at_least(0)
positive_float = _float_where("a number > 0", lambda v: v > 0)
nonneg_float = _float_where("a number >= 0", lambda v: v >= 0)
finite_float = _float_where("a finite number", lambda v: True)
probability = _float_where("a number in [0, 1]", lambda v: 0 <= v <= 1)
nucleus = _float_where("a number in (0, 1]", lambda v: 0 < v <= 1)


def shot_list(text: str) -> list[int]:
    """`0,1,4,8` → [0, 1, 4, 8]: in-context example counts, each >= 0."""
    try:
        shots = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        shots = []
    if not shots or any(k < 0 for k in shots):
        raise _fail("comma-separated integers >= 0 like 0,1,4,8", text)
    return shots


def device(text: str) -> str:
    """A device name; whether it is present is checked when the model is placed (resolve_device)."""
    if text not in DEVICES:
        raise _fail("one of " + ", ".join(DEVICES), text)
    return text


# The types above that check numbers (the parser walk in the tests accepts only these).
NUMERIC = (
    positive_int,
    nonneg_int,
    positive_float,
    nonneg_float,
    finite_float,
    probability,
    nucleus,
    shot_list,
)
