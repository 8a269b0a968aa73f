"""Per-token log-probabilities of given targets, without a full [B, T, V] float copy.

    lp[b, t] = log p_θ(ids[b, t+1] | ids[b, ≤t]) = z_t[y] − logsumexp(z_t),   z_t = W_head · h_t
    H[b, t]  = −Σ_v p_t(v) log p_t(v)                                         (entropy, a metric)

The final hidden states h are computed once; the LM head, the float32 log-softmax and the gather
run over chunks of positions. Under autograd each chunk is recomputed in the backward pass
(activation checkpointing), so only one chunk's [B, c, V] logits are alive at any time; the
DPO, reward, PPO and GRPO losses only ever need lp (and H), never the logits themselves.
`selected_logprobs` scores chosen positions only: the LM head never runs where a mask would zero lp.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK = 128
DEFAULT_ROWS = 2048  # selected positions per LM-head chunk


def _chunk_logprobs(head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(h).float()
    return logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP
    return getattr(inner, "_orig_mod", inner)  # torch.compile


def _chunk_entropy(head: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(head(h).float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """lp [B, T−1] float32 for ids [B, T] (see the module docstring); (lp, H) with `with_entropy`
    (H has no gradient). Works on a `Transformer` (or anything wrapping one, DDP included); another
    model falls back to its full logits."""
    inner = _unwrap(model)
    targets = ids[:, 1:]
    if not hasattr(inner, "lm_head"):  # e.g. the imported GPT-2 network: plain logits
        return _from_log_softmax(torch.log_softmax(model(ids).float()[:, :-1], dim=-1), targets, with_entropy)
    h = model(ids, positions=positions, attn_mask=attn_mask, return_hidden=True)[:, :-1]
    return _head_in_chunks(inner.lm_head, h, targets, 1, chunk, with_entropy)


def _from_log_softmax(logp: torch.Tensor, targets: torch.Tensor, with_entropy: bool):
    """lp = logp[..., target] (and the entropy H, no gradient) from full log-probabilities [..., V]."""
    lp = logp.gather(-1, targets[..., None])[..., 0]
    return (lp, -(logp.exp() * logp).sum(-1).detach()) if with_entropy else lp


def _head_in_chunks(head, h, targets, dim: int, chunk: int, with_entropy: bool):
    """log p(targets) from hidden states h through the LM head, `chunk` positions along `dim` at a
    time (checkpointed when training, so no [.., V] float copy outlives its chunk); and the entropy."""
    parts, ents = [], []
    for s in range(0, max(1, h.shape[dim]), chunk):  # at least one (maybe empty) chunk: lp stays in the graph
        n = min(chunk, h.shape[dim] - s)
        hc, tc = h.narrow(dim, s, n), targets.narrow(dim, s, n)
        if torch.is_grad_enabled() and hc.requires_grad:
            parts.append(checkpoint(_chunk_logprobs, head, hc, tc, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(head, hc, tc))
        if with_entropy:
            with torch.no_grad():
                ents.append(_chunk_entropy(head, hc.detach()))
    lp = torch.cat(parts, dim)
    if with_entropy:
        return lp, (torch.cat(ents, dim) if ents else torch.zeros_like(lp))
    return lp


def sequence_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, completion_mask: torch.Tensor, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Σ_t m_{t+1} · lp[t]: the summed log-prob of the tokens where `completion_mask` [B, T] is 1."""
    lp = token_logprobs(model, ids, chunk=chunk)
    return (lp * completion_mask[:, 1:].to(lp.dtype)).sum(-1)


def selected_logprobs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    source: torch.Tensor,
    targets: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    rows: int = DEFAULT_ROWS,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """lp [N] float32 = log p_θ(targets[n] | the row prefix ending at flat position source[n]);
    (lp, H [N]) with `with_entropy` (H has no gradient).

    source indexes the flattened [B·T] positions of ids [B, T]; the final hidden states are
    computed once (through `model`, so a DDP wrapper sees the forward), then only the N selected
    ones go through the LM head, in checkpointed chunks of `rows`. With source = every position
    b·T + t (t < T−1) and targets = ids[b, t+1] this is `token_logprobs` flattened; a caller that
    needs only completion tokens skips the head on the prompt and the padding. A model without a
    separate LM head (the imported GPT-2 network) gives its full logits, then the selected ones."""
    inner = _unwrap(model)
    if not hasattr(inner, "lm_head"):
        logp = torch.log_softmax(model(ids, positions=positions, attn_mask=attn_mask).float(), dim=-1)
        return _from_log_softmax(logp.reshape(-1, logp.shape[-1])[source], targets, with_entropy)
    h = model(ids, positions=positions, attn_mask=attn_mask, return_hidden=True)
    head = inner.lm_head
    return _head_in_chunks(head, h.reshape(-1, h.shape[-1])[source], targets, 0, rows, with_entropy)
