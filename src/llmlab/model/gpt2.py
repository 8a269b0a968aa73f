"""GPT-2, for importing HF GPT-2 checkpoints (inference: generate, eval, chat).

GPT-2 is not our Llama block, so it gets its own small network with the same calling contract as
`Transformer` (`model(ids, positions, attn_mask, cache, cache_pos) -> logits`, a `.cfg` that `KVCache`
understands), which is all the decoding engine and the evals need:

    x₀ = E[ids] + P[positions]                                 learned absolute positions
    for each block:
        x = x + W_o · Attn(LN₁(x))                             LayerNorm with bias; q, k, v from one c_attn
        x = x + W_2 · gelu_tanh(W_1 · LN₂(x) + b_1) + b_2      every linear has a bias
    logits = E · LN_f(x)                                       tied embeddings

HF stores GPT-2's linears as `Conv1D` with weights [in, out]; `from_hf_state` transposes them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.model.config import ModelConfig


class GPT2Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.ln_1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.c_fc = nn.Linear(d, cfg.d_ff)
        self.mlp_proj = nn.Linear(cfg.d_ff, d)

    def forward(self, x, attn_mask=None, cache=None, layer: int = 0, cache_pos: int = 0):
        B, T, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(layer, cache_pos, k, v)
            if attn_mask is not None and attn_mask.shape[-1] < k.shape[2]:  # read only the masked width
                k, v = k[:, :, : attn_mask.shape[-1]], v[:, :, : attn_mask.shape[-1]]
        if cache is not None and attn_mask is None and T > 1:
            attn_mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=cache_pos)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None and cache is None
        )
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """`GPT2(cfg)(ids) -> logits [B, T, V]`; cfg uses n_kv_head = n_head, d_ff = 4·d, tied embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache=None,
        cache_pos: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        T = ids.shape[1]
        if positions is None:
            if cache_pos + T > self.cfg.context:
                raise ValueError(
                    f"sequence of {cache_pos + T} tokens exceeds the context of {self.cfg.context}"
                )
            positions = torch.arange(cache_pos, cache_pos + T, device=ids.device)
        x = self.wte(ids) + self.wpe(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, cache, i, cache_pos)
        if last_only:
            x = x[:, -1:]
        return F.linear(self.ln_f(x), self.wte.weight).float()

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() - self.wpe.weight.numel() if non_embedding else n


def config_from_hf(hf: dict) -> ModelConfig:
    d, n_head = hf["n_embd"], hf["n_head"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        d_model=d,
        n_head=n_head,
        n_kv_head=n_head,
        d_ff=hf.get("n_inner") or 4 * d,
        context=hf["n_positions"],
        tie_embeddings=True,
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
    )


_NAMES = {
    "ln_1": "ln_1",
    "attn.c_attn": "c_attn",
    "attn.c_proj": "attn_proj",
    "ln_2": "ln_2",
    "mlp.c_fc": "c_fc",
    "mlp.c_proj": "mlp_proj",
}
_CONV1D = ("c_attn", "attn_proj", "c_fc", "mlp_proj")  # HF Conv1D: weight [in, out]


def from_hf_state(cfg: ModelConfig, theirs: dict[str, torch.Tensor]) -> GPT2:
    """Build a GPT2 from a HF GPT2LMHeadModel state dict (keys with or without the `transformer.` prefix)."""
    theirs = {k.removeprefix("transformer."): v for k, v in theirs.items()}
    model = GPT2(cfg)
    state = {}
    for name in model.state_dict():
        if name.startswith("blocks."):
            _, i, mod, kind = name.split(".")
            hf_mod = next(h for h, o in _NAMES.items() if o == mod)
            t = theirs[f"h.{i}.{hf_mod}.{kind}"]
            state[name] = t.t() if mod in _CONV1D and kind == "weight" else t
        else:
            state[name] = theirs[name]
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()})
    return model
