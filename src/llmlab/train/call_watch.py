"""Midtraining watches the phase change the calculator needs: copying a question's operands into
its call, and runs on (up to a cap) while it has not happened.

The call copy forms suddenly, after a number of steps that varies with the seed and the base model
(in the demo ~300 to past 520 of Muon). A fixed step count is then a bet; instead, every
`CHECK_EVERY` steps from the middle of the planned run on, midtraining measures

    calls right = (1/n) Σᵢ [the first call the model writes greedily for question i = the call that answers it]

on `DEV_QUESTIONS` development questions (fresh tool-use questions from the training distribution,
none of them a held-out test question), and acts on it:

    while calls right < goal, the constant-learning-rate part of the schedule goes on: when the
    decay of a `wsd` schedule (its last 20%) would begin before the next check, the run grows by
    ⌈CHECK_EVERY / 0.8⌉ steps, up to `cap` (midtrain.max_steps).

`formed_at` is the first check at or above the goal; `checks` every (step, calls right), for the
report. Decisions read only the model and fixed questions, so the same seed, machine and threads
give the same run; the state (`state_dict`) rides in the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys

import torch

from llmlab.train.optim import WSD_DECAY_FRACTION

CHECK_EVERY = 25
DEV_QUESTIONS = 24
DEV_SEED = "midtrain-dev"  # the training conversations' generators are seeded "midtrain-<seed>"
MAX_NEW_TOKENS = 40  # a call is ~25 tokens


def dev_questions(n: int = DEV_QUESTIONS) -> list[tuple[str, str]]:
    """(question, the expression that answers it) for n fresh tool-use questions: training-distribution
    content (no held-out operand pair or number), drawn from a generator no training run uses."""
    from llmlab.data import tool_use
    from llmlab.data.midtrain import _reserved_numbers

    rng, pairs, reserved = random.Random(DEV_SEED), tool_use.heldout_pairs(), _reserved_numbers()
    out = []
    for _ in range(n):
        conv = tool_use.fresh_conversation(rng, pairs, reserved, 1)
        user = next(m for m in conv if m["role"] == "user")["content"]
        call = next(m for m in conv if m.get("tool_calls"))["tool_calls"][0]
        out.append((user, call["arguments"]["expression"]))
    return out


@torch.no_grad()
def calls_right(model: torch.nn.Module, tok, questions: list[tuple[str, str]]) -> float:
    """The share of `questions` whose first greedy calculator call is the answering expression (up
    to spaces). Runs in eval mode and restores the model's mode."""
    from llmlab.data import tool_use
    from llmlab.eval.tool_eval import first_expression
    from llmlab.generate import generate

    was_training = model.training
    model.eval()
    try:
        prompts = [
            tok.render_for_generation([{"role": "user", "content": q}], tools=[tool_use.SCHEMA])
            for q, _ in questions
        ]
        outs = generate(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
    finally:
        model.train(was_training)
    right = 0
    for out, (_, expression) in zip(outs, questions):
        with contextlib.suppress(ValueError):  # a call that is not valid JSON is a wrong call
            right += first_expression(out) == "".join(expression.split())
    return right / max(1, len(questions))


class CallWatch:
    """The loop's `before_step` hook for midtraining: checks calls right and extends the run while it
    is below `goal`, up to `cap` steps. `warmup` is the run's (the schedule's decay point needs it)."""

    def __init__(self, tok, planned: int, cap: int, goal: float, warmup: int, verbose: bool = True):
        self.tok, self.cap, self.goal, self.warmup, self.verbose = (
            tok,
            max(cap, planned),
            goal,
            warmup,
            verbose,
        )
        self.planned = self.steps = planned
        self.formed_at: int | None = None
        self.checks: list[tuple[int, float]] = []
        self.questions = dev_questions()

    def decay_start(self) -> float:
        return self.warmup + (1.0 - WSD_DECAY_FRACTION) * (self.steps - self.warmup)

    def before_step(self, step: int, model: torch.nn.Module) -> int:
        due = step >= self.planned // 2 and step % CHECK_EVERY == 0  # a check costs ~0.5 s on 2 cores
        if due and (not self.checks or self.checks[-1][0] < step):
            r = calls_right(model, self.tok, self.questions)
            self.checks.append((step, r))
            if self.formed_at is None and r >= self.goal:
                self.formed_at = step
                self._say(
                    f"midtrain: the calculator call formed at step {step} (calls right {r:.2f} on dev questions)"
                )
            grow = math.ceil(CHECK_EVERY / (1.0 - WSD_DECAY_FRACTION))
            if self.formed_at is None and step + CHECK_EVERY >= self.decay_start() and self.steps < self.cap:
                self.steps = min(self.cap, self.steps + grow)
                self._say(
                    f"midtrain: calls right {r:.2f} < {self.goal} at step {step}: the call copy has not "
                    f"formed; the run grows to {self.steps} steps (cap {self.cap})"
                )
        return self.steps

    def record(self) -> dict:
        """What the stage reports: the goal, when it formed (None: not by the end), the checks, the length."""
        return {
            "goal": self.goal,
            "formed_at": self.formed_at,
            "checks": self.checks,
            "steps": self.steps,
            "cap": self.cap,
        }

    def state_dict(self) -> dict:
        return {"steps": self.steps, "formed_at": self.formed_at, "checks": [list(c) for c in self.checks]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state.get("steps", self.steps))
        self.formed_at = state.get("formed_at")
        self.checks = [(int(s), float(r)) for s, r in state.get("checks", [])]

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)
