"""Muon for the hidden matrices, AdamW for the rest: which tensor goes where, and one step of each
against a slow reference written here (Nesterov momentum, quintic Newton–Schulz, the √max(1, A/B)
scale; Adam's first step is the sign of the gradient)."""

import math

import pytest
import torch

from llmlab.errors import UserError
from llmlab.model import Transformer
from llmlab.train.loop import train
from llmlab.train.losses import lm_loss
from llmlab.train.optim import Muon, make_optimizers, muon_split, param_groups

from .conftest import batches, tiny_model_config, token_stream, train_cfg


def newton_schulz5(m: torch.Tensor) -> torch.Tensor:
    """U·Vᵀ of m, approximately: five quintic iterations from m/‖m‖_F, in float64 (wide, not tall)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = m.double() / (m.double().norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(5):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).float()


@pytest.mark.parametrize("tie", [True, False])
def test_hidden_matrices_go_to_muon_tables_and_gains_to_adamw(tie):
    model = Transformer(tiny_model_config(tie_embeddings=tie))
    muon, adamw = muon_split(model, param_groups(model, 0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for g in muon for p in g["params"]}
    on_adamw = {names[id(p)] for g in adamw for p in g["params"]}
    assert on_muon == {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2}
    assert "tok_emb.weight" in on_adamw and ("lm_head.weight" in on_adamw) == (not tie)
    assert all(g["weight_decay"] == 0.1 for g in muon)  # decay is kept, per group
    head = torch.nn.Linear(32, 1, bias=False)  # a value/reward head: one row, not a hidden matrix
    wrapped = torch.nn.ModuleDict({"policy": model, "value_head": head})
    muon, adamw = muon_split(wrapped, [{"params": list(wrapped.parameters()), "weight_decay": 0.0}])
    assert any(p is head.weight for g in adamw for p in g["params"])


def test_one_step_equals_the_reference_muon_and_adamw():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = train_cfg(steps=1, warmup=0, optimizer="muon", muon_lr=0.05, lr=3e-3, weight_decay=0.1, grad_clip=0)
    get_batch = batches(token_stream(), cfg)
    ref = Transformer(tiny_model_config())
    ref.load_state_dict({k: v.clone() for k, v in before.items()}, strict=False)
    loss, n, _ = lm_loss(ref, get_batch(0, 0))
    (loss / n).backward()
    grads = {name: p.grad for name, p in ref.named_parameters()}
    train(model, cfg, None, get_batch, lm_loss, verbose=False)
    after = dict(model.named_parameters())

    for name in ("blocks.0.attn.wq.weight", "blocks.1.attn.wk.weight", "blocks.0.mlp.w_gate.weight"):
        w, g = before[name], grads[name]
        rows, cols = w.shape
        momentum = 0.95
        update = newton_schulz5(g + momentum * g)  # B₁ ∝ G, M ∝ G + μ·G (NS₅ ignores scale)
        want = -w * 0.05 * 0.1 - 0.05 * math.sqrt(max(1, rows / cols)) * update
        step = after[name].detach() - w
        # float32 against float64 on CPU; a wrong lr, scale or plain step is ≥ 40% apart
        assert float((step - want).norm() / want.norm()) < 1e-3, name

    w, g = before["tok_emb.weight"], grads["tok_emb.weight"]
    want = w * (1 - 3e-3 * 0.1) - 3e-3 * g / (g.abs() + 1e-8)  # Adam's first step: m̂/√v̂ = g/|g|
    assert torch.allclose(after["tok_emb.weight"].detach(), want, atol=1e-6)


def test_muon_groups_follow_the_schedule_at_muon_lr():
    model = Transformer(tiny_model_config())
    opts = make_optimizers(model, 3e-3, 0.1, optimizer="muon", muon_lr=0.02)
    assert [type(o).__name__ for o in opts] == ["Muon", "AdamW"]
    assert all(g["lr_scale"] == pytest.approx(0.02 / 3e-3) for g in opts[0].param_groups)
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in opts[1].param_groups)
    with pytest.raises(UserError, match=r"train\.optimizer: unknown optimizer 'sgd'"):
        make_optimizers(model, 3e-3, 0.1, optimizer="sgd")


def test_alignment_stages_keep_adamw():
    from llmlab.align.common import loop_settings
    from llmlab.config import RewardSection

    tcfg = loop_settings(train_cfg(optimizer="muon"), RewardSection(), steps=10)
    assert tcfg.optimizer == "adamw"


def test_the_same_steps_as_torch_muon_and_its_checkpoints_load():
    # torch.optim.Muon iterates Newton–Schulz in bfloat16, ours in float32 on CPU: the same momentum
    # exactly, updates a bfloat16 rounding apart (a wrong scale or sign would be ≥ 40% apart)
    torch.manual_seed(0)
    w0 = torch.randn(48, 24)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt = Muon([{"params": [ours], "weight_decay": 0.1}], lr=0.02)
    ref = torch.optim.Muon([{"params": [theirs], "weight_decay": 0.1}], lr=0.02, adjust_lr_fn="original")
    for _ in range(3):
        g = torch.randn(48, 24)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert torch.equal(opt.state[ours]["momentum_buffer"], ref.state[theirs]["momentum_buffer"])
    moved, want = ours.detach() - w0, theirs.detach() - w0
    assert float((moved - want).norm() / want.norm()) < 0.02
    resumed = Muon(
        [
            {
                "params": [
                    torch.nn.Parameter(w0.clone()),
                ],
                "weight_decay": 0.1,
            }
        ],
        lr=0.02,
    )
    resumed.load_state_dict(ref.state_dict())
    buf = next(iter(resumed.state.values()))["momentum_buffer"]
    assert torch.equal(buf, ref.state[theirs]["momentum_buffer"])
