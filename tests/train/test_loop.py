import json

import pytest
import torch

from llmlab.model import Transformer
from llmlab.train.checkpoint import load_train_state
from llmlab.train.loop import TrainingDiverged, train
from llmlab.train.losses import lm_loss

from .conftest import batches, tiny_model_config, token_stream, train_cfg


def losses(out_dir):
    return [
        r["loss"]
        for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]


def run(out, steps=12, resume=False, tokens=None, dropout=0.0, **kw):
    cfg = train_cfg(steps=steps, **kw)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(dropout=dropout))
    tokens = token_stream() if tokens is None else tokens
    return train(model, cfg, out, batches(tokens, cfg), lm_loss, resume=resume, verbose=False), model


def test_overfits_one_batch():
    cfg = train_cfg(steps=150, lr=1e-2, warmup=5, schedule="constant", weight_decay=0.0)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    fixed = batches(token_stream(), cfg)(0, 0)
    summary = train(model, cfg, None, lambda step, micro: fixed, lm_loss, verbose=False)
    assert summary["loss"] < 0.05  # from ln 61 ≈ 4.1 to memorised


# with dropout, the RNG state must be restored too; with Muon, both optimizers' states
@pytest.mark.parametrize("dropout, optimizer", [(0.0, "adamw"), (0.1, "adamw"), (0.0, "muon")])
def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, dropout, optimizer):
    run(tmp_path / "full", steps=12, save_every=6, dropout=dropout, optimizer=optimizer)
    _stop_after(
        tmp_path / "mid", stop_at=6, dropout=dropout, optimizer=optimizer
    )  # killed after step 6's checkpoint
    assert load_train_state(tmp_path / "mid")["step"] == 6
    run(tmp_path / "mid", steps=12, save_every=6, resume=True, dropout=dropout, optimizer=optimizer)
    assert losses(tmp_path / "mid") == losses(tmp_path / "full")  # exact float equality, every step
    a, b = (load_train_state(tmp_path / d)["model"] for d in ("mid", "full"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _stop_after(out, stop_at, dropout=0.0, **kw):
    """Run the 12-step schedule but kill the run (an exception from get_batch) at step `stop_at`."""
    cfg = train_cfg(steps=12, save_every=6, **kw)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(dropout=dropout))
    inner = batches(token_stream(), cfg)

    def get_batch(step, micro):
        if step == stop_at:
            raise KeyboardInterrupt
        return inner(step, micro)

    with pytest.raises(KeyboardInterrupt):
        train(model, cfg, out, get_batch, lm_loss, verbose=False)


def test_grad_accumulation_equals_one_big_batch():
    cfg_big = train_cfg(steps=4, batch_size=8)
    cfg_acc = train_cfg(steps=4, batch_size=4, grad_accum=2)
    results = []
    for cfg in (cfg_big, cfg_acc):
        torch.manual_seed(0)
        model = Transformer(tiny_model_config())
        train(model, cfg, None, batches(token_stream(), cfg), lm_loss, verbose=False)
        results.append(model.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], atol=1e-5, rtol=1e-4)


def test_nan_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    cfg = train_cfg(steps=10, save_every=4)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    inner = batches(token_stream(), cfg)

    def loss_fn(model, batch):
        loss, count, metrics = lm_loss(model, batch)
        return (loss * float("nan") if step_box[0] >= 6 else loss), count, metrics

    step_box = [0]

    def get_batch(step, micro):
        step_box[0] = step
        return inner(step, micro)

    with pytest.raises(TrainingDiverged, match=r"step 6: loss is nan.*last good checkpoint \(step 4\)"):
        train(model, cfg, tmp_path, get_batch, loss_fn, verbose=False)
    state = load_train_state(tmp_path)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_eval_and_checkpoint_callbacks(tmp_path):
    seen = []
    cfg = train_cfg(steps=6, eval_every=3, save_every=3)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    summary = train(
        model,
        cfg,
        tmp_path,
        batches(token_stream(), cfg),
        lm_loss,
        eval_fn=lambda m: {"val_loss": 1.5, "val_bpb": 0.5, "was_eval": not m.training},
        on_checkpoint=lambda state, step: seen.append((step, sorted(state)[:1])),
        verbose=False,
    )
    assert seen == [(3, ["blocks.0.attn.wk.weight"]), (6, ["blocks.0.attn.wk.weight"])]
    assert summary["val_loss"] == 1.5 and summary["was_eval"] == 1.0
    assert summary["train_tokens"] == 6 * 4 * 16
    assert summary["flops"] == pytest.approx(model.cfg.flops_per_token() * 6 * 4 * 16)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert {"loss", "lr", "grad_norm", "tok_per_s", "mfu", "eta_s"} <= set(records[0])


def test_resume_with_a_different_model_is_a_one_line_error(tmp_path):
    from llmlab.errors import UserError

    run(tmp_path, steps=2, save_every=2)
    cfg = train_cfg(steps=4)
    model = Transformer(tiny_model_config(d_model=64))
    with pytest.raises(UserError, match="does not match this model"):
        train(model, cfg, tmp_path, batches(token_stream(), cfg), lm_loss, resume=True, verbose=False)


def test_cpu_training_flushes_subnormals_and_stops_after(tmp_path):
    """While train() runs on CPU a subnormal float (here 1e-39) computes as 0 in its thread (the flag
    that keeps a copying model's steps from slowing down, benchmarks/flush_denormal.py); afterwards
    it does not, so Python's own floats (5e-324 > 0) behave as usual again."""
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0  # the check can fail
    seen = []

    def loss_and_look(model, batch):
        seen.append((torch.tensor([1e-39]) * 1.0).item())
        return lm_loss(model, batch)

    cfg = train_cfg(steps=2)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    train(model, cfg, tmp_path / "o", batches(token_stream(), cfg), loss_and_look, verbose=False)
    assert seen == [0.0, 0.0]
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0 and 5e-324 > 0


class Grow:
    """A before_step hook that extends a 12-step run to 16 at step 8, as a phase watch does; its
    state rides in the checkpoint (extra_state)."""

    def __init__(self):
        self.steps = 12

    def __call__(self, step, model):
        if step == 8:
            self.steps = 16
        return self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_before_step_extends_the_run_and_a_resume_keeps_the_length(tmp_path):
    def grown(out, resume=False, stop_at=None):
        cfg = train_cfg(steps=12, save_every=10, schedule="wsd")
        torch.manual_seed(0)
        model = Transformer(tiny_model_config())
        inner, hook = batches(token_stream(), cfg), Grow()

        def get_batch(step, micro):
            if step == stop_at:
                raise KeyboardInterrupt
            return inner(step, micro)

        kw = dict(before_step=hook, extra_state=hook, resume=resume, verbose=False)
        return train(model, cfg, out, get_batch, lm_loss, **kw)

    s = grown(tmp_path / "full")
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert s["steps"] == 16 and [r["step"] for r in records if "loss" in r] == list(range(1, 17))
    # the wsd decay moved with the length: the lr is constant until 80% of 16 steps (step 12 of a
    # 12-step run would decay), then falls
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lr[12] == lr[4] == 3e-3 and lr[16] < lr[15] < 3e-3
    with pytest.raises(KeyboardInterrupt):
        grown(tmp_path / "mid", stop_at=12)  # killed after step 10's checkpoint, past the old end
    again = grown(tmp_path / "mid", resume=True)
    assert again["steps"] == 16 and losses(tmp_path / "mid")[-6:] == losses(tmp_path / "full")[-6:]
