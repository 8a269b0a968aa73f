"""Model configuration, presets, parameter counts and FLOPs per token.

Counts (no biases anywhere; d = d_model, h = head dim = d / n_head, L = n_layer, V = vocab, f = d_ff):
    attention per block   d·(n_head·h) + 2·d·(n_kv_head·h) + (n_head·h)·d      (q, k, v, o)
    SwiGLU MLP per block  3·d·f                                               (gate, up, down)
    norms                 2·d per block + d final
    embeddings            V·d, plus V·d more for an untied LM head
Non-embedding N (Kaplan's convention) leaves out the embedding matrix and the LM head.

FLOPs per token for training (forward + backward ≈ 3 × forward, forward ≈ 2 FLOPs per weight use):
    6·N_matmul + 12·L·d_attn·T         (PaLM, appendix B; T = sequence length, d_attn = n_head·h)
where N_matmul counts every matrix a token is multiplied with (non-embedding weights + the LM head).
With a causal mask a token attends to T/2 keys on average, so `causal=True` halves the attention term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llmlab.errors import UserError


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    n_layer: int = 4
    d_model: int = 192
    n_head: int = 6
    n_kv_head: int = 2  # grouped-query attention: n_head query heads share n_kv_head key/value heads
    d_ff: int = 512  # SwiGLU hidden width
    context: int = 256  # maximum sequence length (RoPE table size)
    tie_embeddings: bool = True  # LM head shares the token-embedding matrix
    qk_norm: bool = False  # RMSNorm on queries and keys per head (not expressible in HF Llama)
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def validate(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "context"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise UserError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})"
            )
        if self.n_head % self.n_kv_head:
            raise UserError(
                f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.n_kv_head})"
            )
        if self.head_dim % 2:
            raise UserError(f"head dim d_model/n_head = {self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(
                f"model config: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**d)

    # ---- counts -------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Total trainable parameters, or Kaplan's non-embedding N (no embedding, no LM head)."""
        d, h, L = self.d_model, self.head_dim, self.n_layer
        attn = d * self.n_head * h + 2 * d * self.n_kv_head * h + self.n_head * h * d
        mlp = 3 * d * self.d_ff
        norms = 2 * d
        qk = 2 * h if self.qk_norm else 0
        blocks = L * (attn + mlp + norms + qk) + d  # + final norm
        if non_embedding:
            return blocks
        emb = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return blocks + emb + head

    def flops_per_token(self, seq_len: int | None = None, causal: bool = True) -> float:
        """Training FLOPs per token: 6·N_matmul + attention score/value FLOPs.

        N_matmul = non-embedding matrix weights + LM head (V·d); norms are negligible and left out.
        Attention per token per layer, forward: 2·T·d_attn for QKᵀ and 2·T·d_attn for AV, so with
        backward 12·L·T·d_attn (PaLM's formula). With `causal=True` a token attends to T/2 keys on
        average, halving that term (what a fused causal kernel actually computes).
        """
        T = seq_len or self.context
        d, h, L = self.d_model, self.head_dim, self.n_layer
        matmul = L * (
            d * self.n_head * h + 2 * d * self.n_kv_head * h + self.n_head * h * d + 3 * d * self.d_ff
        )
        matmul += self.vocab_size * d
        attn = 12 * L * T * self.n_head * h
        if causal:
            attn //= 2
        return 6.0 * matmul + attn


PRESETS: dict[str, dict] = {
    # ~2.4M parameters with a 4096-token vocabulary: trains in minutes on a laptop CPU.
    "tiny": dict(n_layer=4, d_model=192, n_head=6, n_kv_head=2, d_ff=512, context=256),
    # ~25M non-embedding parameters: a real small model on CPU, seconds per step.
    "small": dict(n_layer=8, d_model=512, n_head=8, n_kv_head=8, d_ff=1376, context=512),
    # The GPT-2 small shape (12 × 768, 12 heads, context 1024) with Llama blocks.
    "gpt2-124m": dict(
        n_layer=12, d_model=768, n_head=12, n_kv_head=12, d_ff=2048, context=1024, vocab_size=50304
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A preset's config with fields overridden (None values are ignored)."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset '{name}'; choose one of: {', '.join(PRESETS)}")
    kw = dict(PRESETS[name])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**kw)
