"""A preallocated key/value cache for decoding, one slot (row) per sequence.

Decoding one token at a time recomputes nothing: each layer's keys and values for every position so
far are kept in fixed tensors [B, n_kv_head, max_len, head_dim] and new ones are written in place.
Every row has its own length: `cache_pos` is an int (all rows write at the same slot: prefill of one
sequence) or a tensor [B] of per-row start slots (a decode step over rows of different lengths).
Fixed shapes are what let the decode step be compiled / captured in a CUDA graph; `rows(a, b)` is a
view of slots a..b-1 sharing storage (the running rows, or the one row being prefilled).

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
        """Write k, v [B, Hkv, T, h] at slots pos..pos+T-1; return the keys/values to attend over.

        `pos` an int: every row writes there; returns the cache up to pos+T. `pos` a tensor [B]: row b
        writes at pos[b]..pos[b]+T-1 and the whole cache comes back (fixed shapes); the caller's mask
        says which slots each row may read, and its width how many to read."""
        if isinstance(pos, torch.Tensor):
            B, _, T, _ = k.shape
            slots = pos[:, None] + torch.arange(T, device=pos.device)  # [B, T]
            rows = torch.arange(B, device=pos.device)[:, None].expand(B, T)
            self.k[layer][rows, :, slots] = k.transpose(1, 2).to(self.k[layer].dtype)
            self.v[layer][rows, :, slots] = v.transpose(1, 2).to(self.v[layer].dtype)
            return self.k[layer], self.v[layer]
        T = k.shape[2]
        if pos + T > self.max_len:
            raise ValueError(f"KV cache full: {pos + T} > {self.max_len} slots")
        self.k[layer][:, :, pos : pos + T] = k
        self.v[layer][:, :, pos : pos + T] = v
        return self.k[layer][:, :, : pos + T], self.v[layer][:, :, : pos + T]

    def rows(self, start: int, stop: int) -> KVCache:
        """Slots start..stop-1 as a cache of their own, sharing this one's storage (all of them: this
        cache itself, not a view; a compiled step that writes into a view of a larger tensor copies
        the whole tensor back)."""
        if (start, stop) == (0, self.k[0].shape[0]):
            return self
        view = object.__new__(KVCache)
        view.max_len = self.max_len
        view.k = [t[start:stop] for t in self.k]
        view.v = [t[start:stop] for t in self.v]
        return view

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search reorders beams)."""
        self.k = [k[index] for k in self.k]
        self.v = [v[index] for v in self.v]
