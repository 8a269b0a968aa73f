"""FLOP accounting against the real model: parameter counts against the module's tensors, FLOPs
against torch's FlopCounterMode on an actual forward + backward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.scaling.flops import accounting, flops_per_token, param_count, tokens_for_flops, training_flops

SHAPES = [
    dict(
        vocab_size=96, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=16, tie_embeddings=True
    ),
    dict(
        vocab_size=80, n_layer=1, d_model=48, n_head=3, n_kv_head=3, d_ff=80, context=8, tie_embeddings=False
    ),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_param_counts_match_the_module(shape):
    cfg = ModelConfig(**shape)
    model = Transformer(cfg)
    unique = {id(p): p for p in model.parameters()}.values()  # a tied head is one tensor
    total = sum(p.numel() for p in unique)
    emb = model.tok_emb.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
    assert param_count(cfg, "total") == total
    assert param_count(cfg, "non_embedding") == total - emb


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_flops_match_torch_flop_counter(shape):
    """ModelConfig.flops_per_token(T, causal=False) = what a training step (forward + backward)
    really multiplies. torch's FlopCounterMode counts the model's matmuls; it has no formula for
    CPU's fused SDPA kernel, so the attention part is counted on the textbook attention
    softmax(QKᵀ)V per layer, in the same forward + backward."""
    cfg = ModelConfig(**shape)
    torch.manual_seed(0)
    model = Transformer(cfg)
    B, T = 2, cfg.context
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    matmuls = _counted(lambda: model(ids).float().logsumexp(-1).sum().backward())
    q, k, v = (torch.randn(B, cfg.n_head, T, cfg.head_dim, requires_grad=True) for _ in range(3))
    attention = _counted(lambda: (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).sum().backward())
    measured = matmuls + cfg.n_layer * attention
    assert measured == cfg.flops_per_token(T, causal=False) * B * T
    # with a causal mask only half the attention term is needed
    assert flops_per_token(cfg, "exact", seq_len=T) * B * T == matmuls + cfg.n_layer * attention // 2


def test_6nd_and_inverse():
    cfg = ModelConfig(**SHAPES[0])
    n = cfg.num_params(non_embedding=True)
    assert training_flops(cfg, 1000) == 6 * n * 1000
    assert training_flops(cfg, 1000, count="total") == 6 * cfg.num_params() * 1000
    assert tokens_for_flops(cfg, training_flops(cfg, 12345)) == pytest.approx(12345)
    acc = accounting(cfg, 1000)
    assert acc["flops_6N_non_embedding"] == 6 * n * 1000
    assert acc["flops_exact"] == cfg.flops_per_token(cfg.context) * 1000
    # attention term: 6 L T d_attn per token (causal) out of the exact count
    attn = 6 * cfg.n_layer * cfg.context * cfg.n_head * cfg.head_dim
    assert acc["attention_fraction"] == pytest.approx(attn / cfg.flops_per_token(cfg.context))


def test_bad_names_are_user_errors():
    cfg = ModelConfig(**SHAPES[0])
    with pytest.raises(UserError, match="parameter count"):
        param_count(cfg, "embedding")
    with pytest.raises(UserError, match="FLOP method"):
        flops_per_token(cfg, "8N")
