"""Perplexity and bits per byte of a model on a set of texts.

The texts are tokenized as in pretraining (each document preceded by `<|bos|>`) into one stream,
cut into non-overlapping windows of `context + 1` tokens, and every token after the first of a window
is predicted from the ones before it in that window. Over all N predicted tokens y_t,

    L   = −(1/N) Σ_t log p(y_t | ·)                     nats per token
    ppl = exp(L)
    bpb = Σ_t −log p(y_t | ·) / (ln 2 · Σ_t bytes(y_t))    bits per UTF-8 byte (specials count 0 bytes)

Perplexity depends on the tokenizer; bits per byte does not, so bpb compares models with different
vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llmlab.tokenizer.chat import BOS


def token_stream(tok, texts: Sequence[str], max_tokens: int | None = None) -> list[int]:
    """`<|bos|>` + ids of each document, concatenated (stopping once `max_tokens` are reached)."""
    bos = tok.special_tokens.get(BOS)
    ids: list[int] = []
    for text in texts:
        if max_tokens is not None and len(ids) >= max_tokens:
            break
        if bos is not None:
            ids.append(bos)
        ids += tok.encode_ordinary(text)
    return ids


def token_byte_lengths(tok, ids: Sequence[int]) -> dict[int, int]:
    """UTF-8 length of each distinct token (0 for special tokens)."""
    specials = set(tok.special_tokens.values())
    return {t: 0 if t in specials else len(tok.decode_bytes([t])) for t in set(ids)}


@torch.no_grad()
def perplexity(
    model,
    tok,
    texts: Sequence[str],
    batch_size: int = 8,
    max_tokens: int | None = None,
    context: int | None = None,
) -> dict:
    """{"loss", "ppl", "bpb", "tokens", "bytes"} of `model` on `texts` (see the module docstring).
    `max_tokens` caps the evaluated stream (its first tokens), to bound the time."""
    ids = token_stream(tok, texts, None if max_tokens is None else max_tokens + 1)
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    T = context or model.cfg.context
    if len(ids) < 2:
        raise ValueError("need at least two tokens to measure perplexity")
    nbytes = token_byte_lengths(tok, ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    windows = [ids[s : s + T + 1] for s in range(0, len(ids) - 1, T)]
    nats = n_tok = n_bytes = 0.0
    for b in range(0, len(windows), batch_size):
        chunk = windows[b : b + batch_size]
        L = max(len(w) for w in chunk)
        x = torch.zeros((len(chunk), L - 1), dtype=torch.long)
        y = torch.full((len(chunk), L - 1), -100, dtype=torch.long)
        for r, w in enumerate(chunk):
            x[r, : len(w) - 1] = torch.tensor(w[:-1])
            y[r, : len(w) - 1] = torch.tensor(w[1:])
            n_bytes += sum(nbytes[t] for t in w[1:])
        logits = model(x.to(device))
        nats += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                y.to(device).reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
        )
        n_tok += int((y != -100).sum())
    model.train(was_training)
    loss = nats / n_tok
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "bpb": nats / (math.log(2) * n_bytes) if n_bytes else math.inf,
        "tokens": int(n_tok),
        "bytes": int(n_bytes),
    }
