"""Number formatting for progress lines, stage summaries and report tables: the one place it lives."""

from __future__ import annotations

import math
from typing import Any


def missing(x: Any) -> bool:
    """None, NaN and ±inf all print as n/a."""
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def num(x: Any, spec: str = ".3f") -> str:
    """`x` formatted with `spec`, or n/a."""
    return "n/a" if missing(x) else format(x, spec)


def human(n: Any) -> str:
    """A count with an SI suffix: 2.36M, 18.84T, 512."""
    if missing(n):
        return "n/a"
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def seconds(s: Any) -> str:
    """A duration: 3.2s, 1m01s, 1h02m05s ('-' when unknown)."""
    if missing(s):
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(round(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


def count(n: Any) -> str:
    """An integer with thousands separators: 12,345,678."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else cell(n)


def pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, int | float) and not missing(x) else cell(x)


def sci(x: Any) -> str:
    """FLOPs and other large reals: 1.800e+14."""
    return f"{x:.3e}" if isinstance(x, int | float) and x and not missing(x) else cell(x)


def cell(x: Any) -> str:
    """A table cell: floats with 4 significant digits (scientific from 1e5), None as n/a, bools yes/no."""
    if missing(x):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
    return str(x)
