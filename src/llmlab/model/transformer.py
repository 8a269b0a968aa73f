"""The decoder-only transformer.

    x₀ = E[ids]                                           token embedding, no positional table
    for each of the L blocks:
        x = x + Wo · Attn(RoPE(Wq·n(x)), RoPE(Wk·n(x)), Wv·n(x))     causal, grouped-query heads
        x = x + W_down · (silu(W_gate·n(x)) ⊙ W_up·n(x))             SwiGLU MLP
    logits = W_head · n(x)                                W_head = E when embeddings are tied
where n(x) = x / sqrt(mean(x²) + ε) · g is RMSNorm with a learned gain g. No biases anywhere.

RoPE rotates each (i, i + h/2) pair of a head's coordinates by the angle pos · θ^(-2i/h), so the
score q·k depends on positions only through their difference. We use the "rotate half" pairing of
HF's `modeling_llama.py`, so every weight here maps one-to-one onto `LlamaForCausalLM`
(see model/hf.py):

    tok_emb.weight                 ↔ model.embed_tokens.weight
    blocks.i.attn_norm.weight      ↔ model.layers.i.input_layernorm.weight
    blocks.i.attn.wq/wk/wv/wo      ↔ model.layers.i.self_attn.q_proj/k_proj/v_proj/o_proj
    blocks.i.mlp_norm.weight       ↔ model.layers.i.post_attention_layernorm.weight
    blocks.i.mlp.w_gate/w_up/w_down↔ model.layers.i.mlp.gate_proj/up_proj/down_proj
    norm.weight                    ↔ model.norm.weight
    lm_head.weight                 ↔ lm_head.weight

`forward` serves training (whole sequences, causal), packed SFT rows (an explicit block-diagonal mask
with per-document positions) and cached decoding (write new keys/values into a `KVCache` at
`cache_pos`, attend over everything cached so far).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.model.config import ModelConfig


def rope_tables(head_dim: int, max_len: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_len, head_dim] for RoPE: angle(pos, i) = pos · θ^(-2i/h), i < h/2,
    duplicated across the two halves (the rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # [T, h/2]
    angles = torch.cat([angles, angles], dim=-1)  # [T, h]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, h]; cos/sin: [B, 1, T, h] (or broadcastable). Rotates pairs (i, i + h/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (as HF Llama does) so bf16 training stays stable; cast back after.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q·kᵀ/√h + mask) · v for one query per row (a decode step), written out as plain math.

    q: [B, H, 1, h]; k, v: [B, Hkv, S, h]; attn_mask: boolean, broadcastable to [B, 1, 1, S], or None.
    Query heads are grouped as [B, Hkv, H/Hkv, h] so each group reads its shared key/value head once.
    For a single query this is two small matmuls; SDPA's flash kernel on CPU took ~2x as long here
    (batch 8, compiled step), and the plain ops fuse under torch.compile."""
    B, H, _, h = q.shape
    Hkv = k.shape[1]
    if q.dtype != torch.float32 and not torch.compiler.is_compiling():
        # Eager bf16/fp16: SDPA's kernel is ~5x faster than these small batched matmuls on CPU (fp32:
        # the same speed), measured at 18 rows × 8 heads × 300 keys.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=Hkv != H)
    qg = q.reshape(B, Hkv, H // Hkv, h)
    # Compiled (the CPU decode step, whose GEMM backend is inductor's C++ template alone, which has no
    # kernel for these small batched products): broadcast-and-reduce, fused into one pass over the
    # keys. Eagerly: a matmul, which does not materialise the [B, Hkv, G, S, h] product.
    compiling = torch.compiler.is_compiling()
    if compiling:
        scores = (qg[:, :, :, None, :] * k[:, :, None]).sum(-1) * (1.0 / math.sqrt(h))
    else:
        scores = (qg @ k.transpose(-1, -2)) * (1.0 / math.sqrt(h))  # [B, Hkv, G, S]
    if attn_mask is not None:  # [B, 1, 1, S] or [1, S]: broadcasts over the head groups
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    p = scores.float().softmax(-1).to(v.dtype)
    y = (p[..., None] * v[:, :, None]).sum(-2) if compiling else p @ v  # [B, Hkv, G, h]
    return y.reshape(B, H, 1, h)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, attn_mask=None, cache=None, layer: int = 0, cache_pos: int = 0):
        B, T, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        y = self.attend(q, k, v, attn_mask, cache, layer, cache_pos)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def project(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, d] → q [B, H, T, h], k and v [B, Hkv, T, h], RoPE applied (and q/k norms)."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q, k, v, attn_mask=None, cache=None, layer: int = 0, cache_pos: int = 0) -> torch.Tensor:
        """Attention of q over k, v (and what `cache` holds before them) → y [B, H, T, h]."""
        T = q.shape[2]
        if cache is not None:
            k, v = cache.update(layer, cache_pos, k, v)  # all keys/values so far: [B, Hkv, S, h]
            if attn_mask is not None and attn_mask.shape[-1] < k.shape[2]:
                # The mask covers only the first n slots (the filled part of a static cache): read no more.
                n = attn_mask.shape[-1]
                k, v = k[:, :, :n], v[:, :, :n]
        if cache is not None and T == 1 and q.device.type == "cpu":
            # A CPU decode step: plain math beats the flash kernel here (GPUs keep SDPA's kernels).
            return decode_attention(q, k, v, attn_mask)
        is_causal = attn_mask is None and cache is None
        if cache is not None and attn_mask is None and T > 1:
            # Queries sit at absolute slots cache_pos .. cache_pos+T-1; each sees keys up to its own slot.
            S = k.shape[2]
            attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=cache_pos)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )


class MLP(nn.Module):
    """SwiGLU: W_down · (silu(W_gate x) ⊙ W_up x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x, cos, sin, attn_mask=None, cache=None, layer: int = 0, cache_pos: int = 0):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, attn_mask, cache, layer, cache_pos))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """`Transformer(cfg)(ids) -> logits [B, T, V]`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.context, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, σ²) for every matrix with σ = init_std; the two projections that write into the
        residual stream (wo, w_down) get σ/√(2L), so the residual's variance stays O(1) with depth
        (GPT-2's scheme). Norm gains start at 1."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)
            elif name.endswith(("attn.wo.weight", "mlp.w_down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache=None,
        cache_pos: int = 0,
        last_only: bool = False,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """ids [B, T] → logits [B, T, V] (float32); [B, 1, V] for the last position alone with
        `last_only` (a prefill that needs only the next token's logits skips the LM head elsewhere).
        With `return_hidden`: the final hidden states n(x_L) [B, T, d] instead (what reward and value
        heads read, and what a chunked log-prob multiplies by W_head piece by piece).

        positions: [B, T] or [T] RoPE positions (default cache_pos + arange(T)).
        attn_mask: boolean, True = may attend; [B, 1, T, S] or [T, S] (S = keys: T, or cached length;
                   a mask narrower than the cache limits attention to its first S slots).
                   None means plain causal.
        cache / cache_pos: a KVCache and the slot where these T tokens are written.
        """
        B, T = ids.shape
        if positions is None:
            if cache_pos + T > self.cfg.context:
                raise ValueError(
                    f"sequence of {cache_pos + T} tokens exceeds the context of {self.cfg.context}"
                )
            cos = self.rope_cos[cache_pos : cache_pos + T][None, None]
            sin = self.rope_sin[cache_pos : cache_pos + T][None, None]
        else:
            positions = positions if positions.dim() == 2 else positions[None].expand(B, T)
            cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]
        x = self.tok_emb(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, attn_mask, cache, i, cache_pos)
        if last_only:
            x = x[:, -1:]
        if return_hidden:
            return self.norm(x)
        return self.lm_head(self.norm(x)).float()

    def num_params(self, non_embedding: bool = False) -> int:
        """Counted from the actual tensors (shared tensors once); equals cfg.num_params()."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n
