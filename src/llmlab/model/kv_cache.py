"""A preallocated key/value cache for decoding.

Decoding one token at a time recomputes nothing: each layer's keys and values for every position so
far are kept in fixed tensors [B, n_kv_head, max_len, head_dim] and new ones are written in place at
`cache_pos`. Fixed shapes are what let the decode step be compiled / captured in a CUDA graph.

One tensor per layer (not one [L, ...] tensor): an in-place write into a view of a larger tensor makes
`torch.compile` copy the whole cache back every step, a write into a whole tensor stays a scatter.
"""

from __future__ import annotations

import torch

from llmlab.model.config import ModelConfig


class KVCache:
    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.max_len = max_len or cfg.context
        shape = (batch_size, cfg.n_kv_head, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]

    def update(self, layer: int, pos: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [B, Hkv, T, h] at slots pos..pos+T-1; return all keys/values up to pos+T.

        With `pos` a tensor of T slot indices (the static decode step), write there and return the whole
        cache: shapes never change, so the step can be captured in a CUDA graph; the caller's mask hides
        the slots not written yet."""
        if isinstance(pos, torch.Tensor):
            self.k[layer].index_copy_(2, pos, k.to(self.k[layer].dtype))
            self.v[layer].index_copy_(2, pos, v.to(self.v[layer].dtype))
            return self.k[layer], self.v[layer]
        T = k.shape[2]
        if pos + T > self.max_len:
            raise ValueError(f"KV cache full: {pos + T} > {self.max_len} slots")
        self.k[layer][:, :, pos : pos + T] = k
        self.v[layer][:, :, pos : pos + T] = v
        return self.k[layer][:, :, : pos + T], self.v[layer][:, :, : pos + T]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search reorders beams)."""
        self.k = [k[index] for k in self.k]
        self.v = [v[index] for v in self.v]
