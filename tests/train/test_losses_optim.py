import math

import pytest
import torch

from llmlab.model import ModelConfig, Transformer
from llmlab.train.losses import IGNORE_INDEX, bits_per_byte, cross_entropy, lm_loss_sum
from llmlab.train.optim import lr_at, make_optimizer, param_groups


def test_cross_entropy_equals_hand_computation_with_ignored_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    targets = torch.tensor([[1, 4, IGNORE_INDEX], [0, IGNORE_INDEX, 2]])
    total, n = 0.0, 0
    for b in range(2):
        for t in range(3):
            y = int(targets[b, t])
            if y == IGNORE_INDEX:
                continue
            z = logits[b, t].tolist()
            total += math.log(sum(math.exp(v) for v in z)) - z[y]  # −log softmax(z)[y]
            n += 1
    assert float(cross_entropy(logits, targets)) == pytest.approx(total / n, rel=1e-6)
    assert float(cross_entropy(logits, targets, reduction="sum")) == pytest.approx(total, rel=1e-6)


def test_lm_loss_sum_with_masked_targets_runs_the_head_on_the_kept_ones_and_matches_full_logits():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, n_layer=2, d_model=32, n_head=4, context=16))
    x = torch.randint(0, 50, (3, 16))
    y = torch.randint(0, 50, (3, 16))
    y[:, ::3] = IGNORE_INDEX
    loss, kept = lm_loss_sum(model, x, y)
    reference = cross_entropy(model(x), y, reduction="sum")  # every position through the LM head
    assert torch.equal(kept, y[y != IGNORE_INDEX])
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference.backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
    unmasked = torch.randint(0, 50, (3, 16))  # nothing masked: the full-logits path, bit for bit
    assert torch.equal(lm_loss_sum(model, x, unmasked)[0], cross_entropy(model(x), unmasked, reduction="sum"))


def test_bits_per_byte():
    # 100 tokens at ln 2 nats each = 100 bits, over 50 bytes → 2 bits per byte.
    assert bits_per_byte(100 * math.log(2), 50) == pytest.approx(2.0)
    assert bits_per_byte(1.0, 0) == math.inf


def test_schedules():
    kw = dict(lr=1.0, min_lr=0.1, warmup=10, steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # cosine midpoint: (1 + 0.1) / 2
    assert lr_at(110, **kw) == pytest.approx(0.1)
    # WSD: flat for the first 80% after warmup, then linear to min_lr.
    assert lr_at(89, **kw, schedule="wsd") == 1.0
    assert lr_at(100, **kw, schedule="wsd") == pytest.approx(0.55)
    assert lr_at(110, **kw, schedule="wsd") == pytest.approx(0.1)
    assert lr_at(50, **kw, schedule="constant") == 1.0


def test_weight_decay_on_matrices_only_tied_weight_once():
    cfg = ModelConfig(vocab_size=50, n_layer=2, d_model=16, n_head=2, n_kv_head=1, d_ff=32, context=8)
    m = Transformer(cfg)
    decay, no_decay = param_groups(m, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == cfg.num_params()
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    opt = make_optimizer(m, 1e-3, 0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
