"""Midtraining's watch on the calculator call (train/call_watch.py): it extends the run while the
call copy has not formed, and its development questions are never held-out test questions."""

import json

import llmlab.train.call_watch as cw
from llmlab.data.synthetic import examples
from llmlab.train.call_watch import CallWatch, dev_questions


def drive(watch, steps, rates, monkeypatch):
    """Call the hook as the loop does, up to the length it asks for; the k-th check measures rates[k]."""
    seen = iter(rates)
    monkeypatch.setattr(cw, "calls_right", lambda *a, **k: next(seen))
    step, length = 0, steps
    while step < length:
        length = max(length, watch.before_step(step, None))
        step += 1
    return length


def watch(planned=200, cap=300):
    w = CallWatch.__new__(CallWatch)  # no tokenizer needed: calls_right is stubbed
    CallWatch.__init__(w, None, planned, cap, 0.9, warmup=20, verbose=False)
    return w


def test_a_call_that_forms_in_time_leaves_the_run_as_planned(monkeypatch):
    w = watch()
    # checks at 100, 125, 150, 175: formed at 150, before the decay (at 20 + 0.8 × 180 = 164)
    assert drive(w, 200, [0.1, 0.5, 0.95, 1.0], monkeypatch) == 200
    assert w.formed_at == 150 and [s for s, _ in w.checks] == [100, 125, 150, 175]


def test_a_call_that_has_not_formed_extends_the_constant_phase_until_it_does(monkeypatch):
    w = watch()
    rates = [0.0, 0.0, 0.0, 0.2, 0.5, 0.95] + [1.0] * 10
    length = drive(w, 200, rates, monkeypatch)
    # decay start D(T) = 20 + 0.8 (T - 20). Checks at 100, 125, ...; at 150 the decay (164) would begin
    # before the next check: T 200 -> 232 (D 189.6); at 175 -> 264 (D 215.2); at 200 -> 296 (D 240.8);
    # formed at 225, so the run keeps 296 steps and decays from 240.8
    assert w.formed_at == 225 and length == w.steps == 296
    assert [s for s, _ in w.checks] == [100, 125, 150, 175, 200, 225, 250, 275]


def test_the_cap_bounds_a_call_that_never_forms(monkeypatch):
    w = watch(cap=250)
    assert drive(w, 200, [0.0] * 20, monkeypatch) == 250
    assert w.formed_at is None and w.record()["cap"] == 250
    again = watch(cap=250)
    again.load_state_dict(json.loads(json.dumps(w.state_dict())))
    assert again.state_dict() == w.state_dict()


def test_dev_questions_are_fixed_and_never_held_out():
    qs = dev_questions()
    assert qs == dev_questions() and len(qs) == cw.DEV_QUESTIONS
    tests = {ex.prompt for ex in examples("tool_use", "test")}
    assert not tests & {q for q, _ in qs}
    assert all(
        q.startswith(("What is", "A box", "Each of", "There are")) for q, _ in qs
    )  # tool-use questions
