"""The induction phase of pretraining, steered by the signal it exists for: a held-out repeat loss.

Pretraining starts on induction rows (`llmlab.data.induction`) because a copying head forms there
in a phase change, and every later target copies. When that happens depends on the seed and on the
machine's float rounding (~550-900 steps in the demo), and the text that follows can erase a head
that has only just formed. So the phase is not a fixed number of steps; it watches

    h(t) = mean −log p(x_{i+1} | x_≤i) over the predictable positions of held-out induction rows

(fresh span-pair rows from a seed no training step uses; ln V ≈ 7.6 before the head, → 0 with it)
every `CHECK_EVERY` steps and acts on it:

    induction rows while  h > goal  and  step < cap        (cap = data.induction_steps)
    then the corpus, with every k-th step an induction step (k = data.induction_every; 0 = never):
    a rehearsal that keeps the head trained while the text phase reshapes the model around it.

`formed` records whether h fell below the goal before the cap; `checks` every (step, h), through
the text phase too, so a head that fades is seen. Decisions read only the model and fixed held-out
rows, so the same seed, machine and threads give the same steps. The state is saved in the
checkpoint (`state_dict`), so a resumed run switches where the first one did.
"""

from __future__ import annotations

import torch

from llmlab.data.induction import induction_batch
from llmlab.train.losses import lm_loss_sum

CHECK_EVERY = 25  # steps between checks of h (a check is one forward of HELDOUT_ROWS short rows: ~10 ms)
HELDOUT_ROWS = 16
HELDOUT_SEED = 2**32 + 7  # above any train.seed: the training rows' generators never draw these rows


@torch.no_grad()
def heldout_repeat_loss(model: torch.nn.Module, context: int, n_ids: int, rows: int = HELDOUT_ROWS) -> float:
    """h: mean loss (nats/token) on the predictable positions of `rows` held-out span-pair rows of
    `context` ids from [0, n_ids). Runs in eval mode and restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x, y = induction_batch(context, rows, n_ids, seed=HELDOUT_SEED, step=0)
        loss, kept = lm_loss_sum(model, x.to(device), y.to(device))
        return float(loss) / max(1, kept.numel())
    finally:
        model.train(was_training)


class InductionPhase:
    """Which steps train on induction rows. `before_step(step, model)` (the loop's hook) checks h
    and may end the phase; `is_induction(step)` answers for the batch of that step.

    cap: the most steps of the phase (data.induction_steps); goal: the h that counts as formed
    (data.induction_goal, > 0); every: the rehearsal period after it (0 = none);
    context: the held-out rows' length (the longest induction row)."""

    def __init__(self, cap: int, goal: float, every: int, context: int, n_ids: int, verbose: bool = True):
        self.cap, self.goal, self.every = cap, goal, every
        self.context, self.n_ids, self.verbose = context, n_ids, verbose
        self.ended_at: int | None = None if cap > 0 else 0  # the first step after the phase
        self.formed = False
        self.checks: list[tuple[int, float]] = []

    def before_step(self, step: int, model: torch.nn.Module) -> None:
        if self.cap <= 0:
            return
        at_cap = self.ended_at is None and step >= self.cap
        due = step > 0 and step % CHECK_EVERY == 0
        if (due or at_cap) and (not self.checks or self.checks[-1][0] < step):
            h = heldout_repeat_loss(model, self.context, self.n_ids)
            self.checks.append((step, h))
            if self.ended_at is None and h < self.goal:
                self.formed, self.ended_at = True, step
                self._say(
                    f"induction phase: held-out repeat loss {h:.3f} < {self.goal} at step {step}: "
                    "the copying head formed; the corpus follows"
                )
        if self.ended_at is None and step >= self.cap:
            self.ended_at = self.cap
            self._say(
                f"induction phase: the copying head did not form in {self.cap} steps "
                f"(held-out repeat loss {self.checks[-1][1]:.3f}, goal < {self.goal})"
            )

    def is_induction(self, step: int) -> bool:
        if self.cap <= 0:
            return False
        if self.ended_at is None or step < self.ended_at:
            return True
        return self.every > 0 and (step - self.ended_at) % self.every == self.every - 1

    def state_dict(self) -> dict:
        return {"ended_at": self.ended_at, "formed": self.formed, "checks": [list(c) for c in self.checks]}

    def load_state_dict(self, state: dict) -> None:
        self.ended_at = state.get("ended_at", self.ended_at)
        self.formed = bool(state.get("formed", False))
        self.checks = [(int(s), float(h)) for s, h in state.get("checks", [])]

    def _say(self, msg: str) -> None:
        if self.verbose:
            import sys

            print(msg, file=sys.stderr, flush=True)
