"""FLOPs per token against torch's own FLOP counter on a real forward + backward."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmlab.model import ModelConfig, Transformer


def cfg_(**kw) -> ModelConfig:
    return ModelConfig(
        **{**dict(vocab_size=97, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=16), **kw}
    )


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False}, {"n_kv_head": 4}])
def test_flops_per_token_equals_counted_training_flops(kw):
    cfg = cfg_(**kw)
    model = Transformer(cfg)
    B, T = 2, 16
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 97, (B, T))).sum().backward()
    counted = counter.get_total_flops()  # every matmul, forward and backward (the fused CPU
    # attention kernel is not counted by torch's counter; its term is checked below)
    attention = cfg.flops_per_token(T, causal=False) - 6 * (
        cfg.num_params(non_embedding=True)
        - (2 * cfg.n_layer + 1) * cfg.d_model
        + cfg.vocab_size * cfg.d_model
    )
    assert counted == (cfg.flops_per_token(T, causal=False) - attention) * B * T

    # The attention term: QKᵀ and AV as explicit batched matmuls, forward + backward, full T×T.
    H, h = cfg.n_head, cfg.head_dim
    q, k, v = (torch.randn(B, H, T, h, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).sum().backward()
    assert counter.get_total_flops() * cfg.n_layer == attention * B * T
    # Causal: a token attends to T/2 keys on average, so that term halves.
    assert cfg.flops_per_token(T) == cfg.flops_per_token(T, causal=False) - attention / 2
