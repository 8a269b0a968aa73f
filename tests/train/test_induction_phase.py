"""The induction phase steered by its held-out repeat loss (train/induction_phase.py), and the
pretraining stage's check that the base model copies (train/pretrain_stage.py)."""

import json
import math

import pytest
import torch

import llmlab.train.induction_phase as ip
from llmlab.config import load_recipe
from llmlab.model.config import ModelConfig
from llmlab.model.transformer import Transformer
from llmlab.train.induction_phase import CHECK_EVERY, InductionPhase, heldout_repeat_loss
from llmlab.train.pretrain import pretrain
from llmlab.train.pretrain_stage import COPIES_TEXT, CopyingHeadMissing, copying_check, raise_if_no_copy


def drive(phase, steps, losses, monkeypatch):
    """Run the loop's hook for `steps` steps; the k-th check measures losses[k]."""
    seen = iter(losses)
    monkeypatch.setattr(ip, "heldout_repeat_loss", lambda *a, **k: next(seen))
    kinds = []
    for step in range(steps):
        phase.before_step(step, None)
        kinds.append(phase.is_induction(step))
    return kinds


def test_the_phase_ends_at_the_first_check_below_the_goal_then_rehearses(monkeypatch):
    phase = InductionPhase(cap=10 * CHECK_EVERY, goal=0.5, every=4, context=64, n_ids=100, verbose=False)
    kinds = drive(phase, 5 * CHECK_EVERY, [7.0, 3.0, 0.4, 0.2], monkeypatch)
    end = 3 * CHECK_EVERY  # checks at 25, 50, 75: 0.4 < 0.5 at the third
    assert phase.formed and phase.ended_at == end
    assert phase.checks == [(CHECK_EVERY, 7.0), (2 * CHECK_EVERY, 3.0), (end, 0.4), (4 * CHECK_EVERY, 0.2)]
    assert all(kinds[:end]) and not any(kinds[end : end + 3]) and kinds[end + 3]
    assert sum(kinds[end:]) == len(kinds[end:]) // 4  # every 4th step after the switch


def test_a_head_that_never_forms_ends_at_the_cap_not_formed(monkeypatch):
    cap = 2 * CHECK_EVERY
    phase = InductionPhase(cap=cap, goal=0.5, every=0, context=64, n_ids=100, verbose=False)
    kinds = drive(phase, 3 * CHECK_EVERY, [7.5, 7.4, 7.4], monkeypatch)
    assert not phase.formed and phase.ended_at == cap
    assert kinds == [True] * cap + [False] * CHECK_EVERY  # no rehearsal with every = 0
    # the state survives a checkpoint: a resumed run switches where this one did
    again = InductionPhase(cap=cap, goal=0.5, every=0, context=64, n_ids=100, verbose=False)
    again.load_state_dict(json.loads(json.dumps(phase.state_dict())))
    assert (
        again.state_dict() == phase.state_dict()
        and again.is_induction(cap - 1)
        and not again.is_induction(cap)
    )


def test_no_induction_phase_means_the_corpus_from_the_first_step():
    phase = InductionPhase(cap=0, goal=0.5, every=4, context=64, n_ids=100, verbose=False)
    phase.before_step(0, None)
    assert not any(phase.is_induction(s) for s in range(10)) and phase.checks == []


def test_heldout_repeat_loss_is_ln_v_for_a_model_that_cannot_copy():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layer=1, d_model=16, n_head=2, n_kv_head=2, d_ff=32, context=64)
    model = Transformer(cfg).train()
    h = heldout_repeat_loss(model, 64, 64)
    assert abs(h - math.log(64)) < 0.3 and model.training  # ~uniform, and the mode is restored
    assert heldout_repeat_loss(model, 64, 64) == h  # fixed held-out rows


def test_the_check_reports_which_step_failed():
    formed = {"formed": True, "ended_at": 875, "goal": 0.5, "checks": [[875, 0.4]]}
    copies = {"first": 5.6, "repeat": 0.9}
    assert copying_check(formed, copies)["ok"]
    lost = copying_check(formed, {"first": 5.6, "repeat": 5.3})
    assert not lost["ok"] and "formed at step 875 but the base model does not copy text" in lost["summary"]
    never = copying_check({"formed": False, "ended_at": 900, "goal": 0.5, "checks": [[900, 5.26]]}, copies)
    assert (
        not never["ok"]
        and "did not form in 900 induction steps: held-out repeat loss 5.26" in never["summary"]
    )
    # no induction phase in the recipe: nothing to require
    assert copying_check(None, {"first": 5.6, "repeat": 5.5})["ok"]
    assert 0.9 < COPIES_TEXT < 5.3


def test_a_tiny_base_model_that_does_not_copy_stops_the_run(corpus, tmp_path):
    """End to end in seconds: 6 steps on induction rows cannot form a head, and the stage says so."""
    torch.set_num_threads(1)
    tiny = [
        f"data.source={json.dumps(str(corpus))}",
        "data.vocab_size=300",
        "data.induction_steps=4",
        "data.induction_context=16",
        "data.induction_every=2",
        "model.n_layer=1",
        "model.d_model=32",
        "model.n_head=2",
        "model.d_ff=64",
        "model.context=32",
        "train.steps=6",
        "train.batch_size=4",
        "train.log_every=1",
        "train.warmup=2",
    ]
    s = pretrain(load_recipe(None, tiny), tmp_path / "run", verbose=False, sample=False)
    phase = s["induction_phase"]
    assert phase["formed"] is False and phase["ended_at"] == 4 and phase["final"] > 3.0
    with pytest.raises(CopyingHeadMissing, match="the copying head did not form in 4 induction steps"):
        raise_if_no_copy(copying_check(phase, {"first": 5.0, "repeat": 5.0}), tmp_path / "run")
