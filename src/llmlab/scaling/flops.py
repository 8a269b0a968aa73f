"""Compute accounting for scaling laws: N, D and C for a model shape.

Two parameter counts (ModelConfig.num_params does the counting):

    N_total          every trainable weight (embedding, blocks, final norm, untied LM head)
    N_non_embedding  Kaplan's N: without the token embedding and the LM head

Two FLOP counts for training on D tokens:

    C ≈ 6 N D                                   (2 FLOPs per weight per token forward, 4 backward)
    C_exact = D · (6 N_matmul + 6 L T d_attn)   (ModelConfig.flops_per_token, causal: each token
                                                 attends to T/2 keys on average; N_matmul includes
                                                 the LM head, which 6 N_non_embedding leaves out)

Scaling fits say which N they use; sweeps write all of these columns to their CSV.
"""

from __future__ import annotations

from llmlab.errors import UserError
from llmlab.model.config import ModelConfig

COUNTS = ("non_embedding", "total")
METHODS = ("6N", "exact")


def param_count(cfg: ModelConfig, count: str = "non_embedding") -> int:
    """N for `count` ∈ {"non_embedding", "total"}."""
    if count not in COUNTS:
        raise UserError(f"unknown parameter count {count!r}; use one of: {', '.join(COUNTS)}")
    return cfg.num_params(non_embedding=count == "non_embedding")


def flops_per_token(
    cfg: ModelConfig, method: str = "6N", count: str = "non_embedding", seq_len: int | None = None
) -> float:
    """Training FLOPs per token: 6·N (N per `count`) or the exact count with attention."""
    if method == "6N":
        return 6.0 * param_count(cfg, count)
    if method == "exact":
        return float(cfg.flops_per_token(seq_len or cfg.context, causal=True))
    raise UserError(f"unknown FLOP method {method!r}; use one of: {', '.join(METHODS)}")


def training_flops(
    cfg: ModelConfig,
    tokens: float,
    method: str = "6N",
    count: str = "non_embedding",
    seq_len: int | None = None,
) -> float:
    """C = D · FLOPs per token."""
    return float(tokens) * flops_per_token(cfg, method, count, seq_len)


def tokens_for_flops(
    cfg: ModelConfig,
    flops: float,
    method: str = "6N",
    count: str = "non_embedding",
    seq_len: int | None = None,
) -> float:
    """D = C / FLOPs per token (for an IsoFLOP run: D = C / 6N)."""
    return float(flops) / flops_per_token(cfg, method, count, seq_len)


def accounting(cfg: ModelConfig, tokens: float, seq_len: int | None = None) -> dict:
    """Every count for one run: params_total, params_non_embedding, tokens, flops_6N_total,
    flops_6N_non_embedding, flops_exact, and attention_fraction (the share of C_exact spent on
    attention scores and values, 6·L·T·d_attn per token)."""
    T = seq_len or cfg.context
    n_total, n_non = cfg.num_params(), cfg.num_params(non_embedding=True)
    exact = cfg.flops_per_token(T, causal=True)
    # the causal attention term is half the full one, so full − causal = the causal term itself
    attn = cfg.flops_per_token(T, causal=False) - exact
    return {
        "params_total": n_total,
        "params_non_embedding": n_non,
        "tokens": float(tokens),
        "flops_6N_total": 6.0 * n_total * tokens,
        "flops_6N_non_embedding": 6.0 * n_non * tokens,
        "flops_exact": exact * tokens,
        "attention_fraction": attn / exact,
    }
