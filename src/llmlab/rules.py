"""What a recipe key allows: a `Rule` is a check and the words that say it, built from a few helpers.

    RULES = {TrainSection: {"lr": above(0), "schedule": one_of(SCHEDULES), "seed": SEED}}
    rule.check("train.lr", -1.0)   # UserError: recipe key train.lr: must be > 0, got -1.0

`llmlab.config` declares one rule for every recipe key (its `RULES` table); sections defined beside
their stage (e.g. `llmlab.align.config`) declare theirs with the same helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmlab.errors import UserError


@dataclass(frozen=True)
class Rule:
    """The values one recipe key allows: `ok(value)`, and `says()`, what is allowed in words (a
    function, so that lists such as the model presets are read only when a message needs them)."""

    ok: Callable[[Any], bool]
    says: Callable[[], str]

    def check(self, key: str, value: Any) -> None:
        if not self.ok(value):
            raise UserError(f"recipe key {key}: must be {self.says()}, got {value!r}")


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _with(note: str) -> str:
    return f" ({note})" if note else ""  # e.g. ">= 0 (0 = only at the end)"


def above(lo: float, note: str = "") -> Rule:
    return Rule(lambda v: is_number(v) and v > lo, lambda: f"> {lo}{_with(note)}")


def at_least(lo: float, note: str = "") -> Rule:
    return Rule(lambda v: is_number(v) and v >= lo, lambda: f">= {lo}{_with(note)}")


def fraction(note: str = "") -> Rule:
    """0 ≤ v < 1."""
    return Rule(lambda v: is_number(v) and 0 <= v < 1, lambda: f"in [0, 1){_with(note)}")


def one_of(choices: tuple[str, ...] | Callable[[], Any]) -> Rule:
    """One of `choices` (or of what the function `choices` returns, read when checking)."""
    names = choices if callable(choices) else (lambda: choices)
    return Rule(lambda v: v in tuple(names()), lambda: "one of " + ", ".join(names()))


def optional(rule: Rule) -> Rule:
    """`rule`, or unset (None: the key left out of the recipe)."""
    return Rule(lambda v: v is None or rule.ok(v), lambda: f"{rule.says()}, or left out")


def each(rule: Rule) -> Rule:
    return Rule(lambda v: all(rule.ok(x) for x in v), lambda: f"a list, each item {rule.says()}")


def one_or_each(rule: Rule) -> Rule:
    """A value `rule` accepts, or a non-empty list of them."""

    def ok(v: Any) -> bool:
        return bool(v) and all(rule.ok(x) for x in v) if isinstance(v, list) else rule.ok(v)

    return Rule(ok, lambda: f"{rule.says()}, or a non-empty list of such")


def free(why: str) -> Rule:
    """Any value of the field's type; `why` says why (e.g. where it is checked instead)."""
    return Rule(lambda v: True, lambda: why)


BOOL = free("true or false")
SCHEDULES = ("cosine", "wsd", "constant")
OPTIMIZERS = ("adamw", "muon")
SEED = at_least(0)


def fine_tuning_rules() -> dict[str, Rule]:
    """The keys every fine-tuning section shares (SFT, reward, DPO): steps or epochs, the optimiser
    and its schedule, the held-out fraction, the seed."""
    return {
        "steps": at_least(0, "0 = epochs × steps per epoch"),
        "epochs": above(0),
        "batch_size": at_least(1),
        "lr": above(0),
        "min_lr": at_least(0),
        "warmup": at_least(0),
        "schedule": one_of(SCHEDULES),
        "weight_decay": at_least(0),
        "val_fraction": fraction(),
        "seed": SEED,
    }
