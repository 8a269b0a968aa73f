"""The loop's loss contract (summed loss, count) and its hooks: before_step, parameter groups with
their own lr, extra state saved in train_state.pt, frozen modules."""

from __future__ import annotations

import json

import torch

from llmlab.data.chat_batches import IGNORE_INDEX
from llmlab.model import Transformer
from llmlab.train.checkpoint import load_train_state
from llmlab.train.loop import train
from llmlab.train.losses import cross_entropy, lm_loss
from llmlab.train.sft import sft_loss

from .conftest import batches, tiny_model_config, token_stream, train_cfg


def _sft_batch(rows: torch.Tensor, n_trained: list[int]) -> dict:
    """Rows [B, T]; row i trains its last n_trained[i] targets only."""
    targets = rows.roll(-1, dims=1).clone()
    for i, n in enumerate(n_trained):
        targets[i, : rows.shape[1] - n] = IGNORE_INDEX
    return {"ids": rows, "targets": targets, "positions": None, "attn_mask": None}


def _cat(a: dict, b: dict) -> dict:
    return {"ids": torch.cat([a["ids"], b["ids"]]), "targets": torch.cat([a["targets"], b["targets"]]),
            "positions": None, "attn_mask": None}  # fmt: skip


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_with_unequal_token_counts_equals_one_big_batch(tmp_path):
    """Micro-batch 1 trains 28 tokens, micro-batch 2 trains 2: the token-weighted step equals the
    one-batch step; a mean of per-micro-batch means would weight micro-batch 2's tokens 14x."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 61, (4, 16), generator=g)
    first, second = _sft_batch(rows[:2], [14, 14]), _sft_batch(rows[2:], [1, 1])
    big = _cat(first, second)
    states = []
    for name, cfg, get in (
        ("acc", train_cfg(steps=3, batch_size=2, grad_accum=2), lambda s, m: (first, second)[m]),
        ("big", train_cfg(steps=3, batch_size=4, grad_accum=1), lambda s, m: big),
    ):
        torch.manual_seed(0)
        model = Transformer(tiny_model_config())
        train(model, cfg, tmp_path / name, get, sft_loss, verbose=False)
        states.append(model.state_dict())
        with torch.no_grad():
            torch.manual_seed(0)
            init = Transformer(tiny_model_config())
            expected = float(cross_entropy(init(big["ids"]), big["targets"]))  # the token mean
        assert abs(_records(tmp_path / name)[0]["loss"] - expected) < 1e-5
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=1e-6, rtol=1e-5)


class _Counter:
    """Extra state: how many rollouts happened (what a prompt cursor or KL controller would be)."""

    def __init__(self):
        self.n = 0

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, d: dict) -> None:
        self.n = d["n"]


def test_before_step_extra_state_and_resume(tmp_path):
    seen = []
    counter = _Counter()

    def before_step(step, model):
        assert model.training
        counter.n += 1
        seen.append(step)

    cfg = train_cfg(steps=4, save_every=2)
    model = Transformer(tiny_model_config())
    get = batches(token_stream(), cfg)
    train(model, cfg, tmp_path, get, lm_loss, before_step=before_step, extra_state=counter, verbose=False)
    assert seen == [0, 1, 2, 3] and load_train_state(tmp_path)["extra"]["user"] == {"n": 4}

    resumed, seen[:] = _Counter(), []
    cfg6 = train_cfg(steps=6, save_every=2)
    train(model, cfg6, tmp_path, get, lm_loss, extra_state=resumed, resume=True, verbose=False)
    assert resumed.n == 4  # restored from train_state.pt before the first resumed step


def test_param_groups_lr_scale_and_frozen_modules():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    head = torch.nn.Linear(32, 1)
    ref = Transformer(tiny_model_config())
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    wrapper = torch.nn.ModuleDict({"body": model, "head": head})
    cfg = train_cfg(steps=2, schedule="constant", warmup=0)

    def loss_fn(net, batch):
        with torch.no_grad():
            ref_logits = ref(batch[0])
        assert not ref.training and not ref_logits.requires_grad
        s, n, m = lm_loss(net["body"], batch)
        return s + head(torch.ones(1, 32)).sum() * 0.0 + (ref_logits.sum() * 0), n, m

    def groups(net):
        return [{"params": list(net["body"].parameters()), "weight_decay": 0.0},
                {"params": list(net["head"].parameters()), "weight_decay": 0.0, "lr_scale": 10.0}]  # fmt: skip

    opt_lrs = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        opt_lrs.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        train(wrapper, cfg, None, batches(token_stream(), cfg), loss_fn, param_groups=groups,
              frozen=(ref,), verbose=False)  # fmt: skip
    finally:
        torch.optim.AdamW.step = real_step
    assert opt_lrs == [[cfg.lr, 10 * cfg.lr]] * 2
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in ref_before.items())
    assert not any(p.requires_grad for p in ref.parameters())
