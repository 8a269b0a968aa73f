"""One forward pass over several independent batches: a decode step and prompt chunks together.

A decode step at R rows streams every weight matrix for R tokens; a prompt chunk of C tokens alone
streams them again. Packed, the R + C tokens share each matmul (one pass over the weights, a wider
GEMM) while attention stays separate: each part attends over its own cache with its own positions
and mask. This is the "chunked prefill mixed into decode" of vLLM, in the plain-PyTorch form:

    x = E[ids of every part, concatenated]                        [1, N, d], N = Σ B_p·T_p
    for each block:
        q, k, v = RoPE(W·n(x)) at each token's own position       one matmul each, all parts
        y_p = Attn(q_p, k_p, v_p; cache_p, mask_p) for each part  split, attend, concatenate
        x = x + Wo·y;  x = x + MLP(n(x))                          one matmul each, all parts
    logits at each part's wanted positions                       one LM-head matmul

Numerically each part equals running it alone up to float rounding (the GEMMs have other widths).
Llama-style `Transformer` only (inference); other models run their parts one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.model.transformer import Transformer


@dataclass
class Part:
    """B sequences of T new tokens at `positions` [B, T], written into `cache` at `cache_pos` (an int,
    or a tensor [B] of per-row slots with `attn_mask` [B, 1, 1, S] saying which slots each row reads)."""

    ids: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [B, T]
    cache: object
    cache_pos: int | torch.Tensor
    attn_mask: torch.Tensor | None = None
    all_logits: bool = False  # logits at every position (echo), else at each row's last


def can_pack(model) -> bool:
    """A Llama-style Transformer in eval mode whose forward is ours (a subclass that changes forward
    must be called through it)."""
    return (
        isinstance(model, Transformer) and type(model).forward is Transformer.forward and not model.training
    )


def _as_rows(t: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """[1, H, B·T, h] → [B, H, T, h] (a view)."""
    return t[0].unflatten(1, (B, T)).transpose(0, 1)


def packed_forward(model: Transformer, parts: list[Part]) -> list[torch.Tensor]:
    """Logits per part, float32: [B, V] (each row's last position) or [B·T, V] with `all_logits`."""
    sizes = [p.ids.numel() for p in parts]
    pos = torch.cat([p.positions.reshape(-1) for p in parts])
    cos, sin = model.rope_cos[pos][None, None], model.rope_sin[pos][None, None]
    x = model.tok_emb(torch.cat([p.ids.reshape(-1) for p in parts]))[None]
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q, k, v = attn.project(block.attn_norm(x), cos, sin)  # [1, H, N, h]
        ys = []
        for p, qp, kp, vp in zip(parts, q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2)):
            B, T = p.ids.shape
            qp, kp, vp = _as_rows(qp, B, T), _as_rows(kp, B, T), _as_rows(vp, B, T)
            y = attn.attend(qp, kp, vp, p.attn_mask, p.cache, layer, p.cache_pos)  # [B, H, T, h]
            ys.append(y.transpose(1, 2).reshape(B * T, -1))
        x = x + attn.wo(torch.cat(ys)[None])
        x = x + block.mlp(block.mlp_norm(x))
    wanted, start = [], 0
    for p, n in zip(parts, sizes):
        B, T = p.ids.shape
        last = torch.arange(B, device=x.device) * T + (T - 1)
        wanted.append(start + (torch.arange(n, device=x.device) if p.all_logits else last))
        start += n
    logits = model.lm_head(model.norm(x[0, torch.cat(wanted)])).float()
    return list(logits.split([len(w) for w in wanted]))
