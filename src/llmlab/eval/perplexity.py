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
from collections.abc import Iterable, Sequence

import torch

from llmlab.errors import UserError
from llmlab.tokenizer.chat import BOS
from llmlab.train.losses import IGNORE_INDEX, bits_per_byte, cross_entropy


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


def byte_lengths(tok, vocab_size: int | None = None) -> torch.Tensor:
    """UTF-8 length of every token id as a tensor (0 for special tokens), the denominator of bpb."""
    from llmlab.data.shards import token_byte_lengths

    return torch.from_numpy(token_byte_lengths(tok, vocab_size))


@torch.no_grad()
def nll_sums(model, batches: Iterable, token_bytes: torch.Tensor) -> tuple[float, float, float]:
    """(Σ nats, predicted tokens, their UTF-8 bytes) of `model` over `batches`: the one evaluator behind
    pretraining's val loss, SFT's assistant-token val loss and `perplexity`.

    A batch is (inputs, targets) or (inputs, targets, model kwargs); targets equal to IGNORE_INDEX
    (prompt tokens in SFT, padding) are not counted. The model runs in eval mode (restored after).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = tokens = n_bytes = 0.0
    try:
        for batch in batches:
            x, y, kw = batch if len(batch) == 3 else (*batch, {})
            x, y = x.to(device), y.to(device)
            kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            nats += float(cross_entropy(model(x, **kw), y, reduction="sum"))
            kept = y[y != IGNORE_INDEX].cpu()
            tokens += kept.numel()
            n_bytes += float(token_bytes[kept].sum())
    finally:
        model.train(was_training)
    return nats, tokens, n_bytes


def loss_and_bpb(nats: float, tokens: float, n_bytes: float) -> dict[str, float]:
    """{"val_loss": nats per token, "val_bpb": bits per byte} from `nll_sums`' totals."""
    return {
        "val_loss": nats / tokens if tokens else math.nan,
        "val_bpb": bits_per_byte(nats, n_bytes) if n_bytes else math.nan,
    }


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
    if len(ids) < 2:
        raise UserError(f"perplexity needs at least two tokens of text, got {len(ids)}; give a longer text")
    T = context or model.cfg.context
    windows = [ids[s : s + T + 1] for s in range(0, len(ids) - 1, T)]

    def batches():
        for b in range(0, len(windows), batch_size):
            chunk = windows[b : b + batch_size]
            L = max(len(w) for w in chunk)
            x = torch.zeros((len(chunk), L - 1), dtype=torch.long)
            y = torch.full((len(chunk), L - 1), IGNORE_INDEX, dtype=torch.long)
            for r, w in enumerate(chunk):
                x[r, : len(w) - 1] = torch.tensor(w[:-1])
                y[r, : len(w) - 1] = torch.tensor(w[1:])
            yield x, y

    nats, n_tok, n_bytes = nll_sums(model, batches(), byte_lengths(tok))
    loss = nats / n_tok
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "bpb": bits_per_byte(nats, n_bytes) if n_bytes else math.inf,
        "tokens": int(n_tok),
        "bytes": int(n_bytes),
    }
