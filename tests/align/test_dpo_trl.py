"""`dpo_loss` equals TRL 1.16's `DPOTrainer._compute_loss` for every loss type (float64, 1e-6).

TRL's method is private, so it is called unbound on a stub trainer whose model returns precomputed
per-token log-probs (the fused-LM-head outputs TRL reads) and with precomputed reference log-probs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from llmlab.align.dpo import LOSS_TYPES, dpo_loss

trl_dpo = pytest.importorskip(
    "trl.trainer.dpo_trainer", reason="trl==1.16.0 not installed (pip install '.[dev]')"
)


def _batch(pairs=6, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = 2 * pairs
    prompt = torch.randint(1, 4, (b,), generator=g)
    comp = torch.randint(1, length - 3, (b,), generator=g)
    pos = torch.arange(length)
    completion_mask = ((pos >= prompt[:, None]) & (pos < (prompt + comp)[:, None])).long()
    attention_mask = (pos < (prompt + comp)[:, None]).long()
    shift = completion_mask[:, 1:].double()
    per_token = -torch.rand(b, length - 1, generator=g, dtype=torch.float64) * 3 * shift
    ref = per_token + 0.4 * torch.randn(b, length - 1, generator=g, dtype=torch.float64) * shift
    return completion_mask, attention_mask, per_token, ref.sum(1)


def _trl(loss_types, beta, eps, per_token, ref_logps, completion_mask, attention_mask, weights=None):
    pairs = per_token.shape[0] // 2
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros_like(per_token),
        mean_logits=torch.zeros_like(per_token),
        is_top1=torch.zeros_like(per_token, dtype=torch.bool),
    )
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=loss_types, loss_weights=weights or [1.0] * len(loss_types), beta=beta, label_smoothing=eps,
        args=SimpleNamespace(discopop_tau=0.05), use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_logps[:pairs],
        "ref_rejected_logps": ref_logps[pairs:],
    }
    loss = trl_dpo.DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", [*LOSS_TYPES, ("sigmoid", "sft")])
def test_dpo_loss_equals_trl(loss_type):
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    eps = 0.1 if loss_type in ("robust", "exo_pair", "aot", "aot_unpaired") else 0.0
    completion_mask, attention_mask, per_token, ref_logps = _batch()
    weights = [1.0, 0.5] if len(types) == 2 else None
    leaf = per_token.requires_grad_()
    per_token = leaf * completion_mask[:, 1:]  # what a model gives: 0 (no gradient) off the completion
    theirs, their_metrics = _trl(
        types, 0.3, eps, per_token, ref_logps, completion_mask, attention_mask, weights
    )
    (their_grad,) = torch.autograd.grad(theirs, leaf, retain_graph=True)
    pairs = per_token.shape[0] // 2
    logps, lengths = per_token.sum(1), completion_mask.sum(1)
    ours, metrics = dpo_loss(
        logps[:pairs], logps[pairs:], ref_logps[:pairs], ref_logps[pairs:], beta=0.3, loss_type=types,
        label_smoothing=eps, chosen_lengths=lengths[:pairs], rejected_lengths=lengths[pairs:], loss_weights=weights,
    )  # fmt: skip
    (our_grad,) = torch.autograd.grad(ours, leaf)
    assert ours.dtype == torch.float64 and abs(ours.item() - theirs.item()) < 1e-6
    torch.testing.assert_close(our_grad, their_grad, atol=1e-6, rtol=0)
    for k, v in metrics.items():
        assert abs(float(v) - their_metrics[k]) < 1e-6, k


def test_sigmoid_loss_is_ln2_at_initialisation():
    logps = -torch.rand(8, dtype=torch.float64) * 20
    loss, m = dpo_loss(logps[:4], logps[4:], logps[:4].clone(), logps[4:].clone(), beta=0.1)
    assert abs(float(loss) - math.log(2)) < 1e-12
    assert float(m["rewards/margins"]) == 0.0 and float(m["rewards/accuracies"]) == 0.0  # strict >
