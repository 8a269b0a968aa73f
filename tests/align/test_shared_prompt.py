"""One row per pair (the prompt read once) gives the two-row layout's log-probs and gradients."""

from __future__ import annotations

import torch

from llmlab.align.data import PairSeq, pair_batch
from llmlab.align.dpo import dpo_loss
from llmlab.align.dpo_train import make_batch
from llmlab.align.shared_prompt import shared_prompt_batch, shared_prompt_logps
from llmlab.model.logprobs import selected_logprobs, sequence_logprobs, token_logprobs

from .conftest import tiny_chat_model


def _pairs(vocab: int) -> list[PairSeq]:
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=g).tolist()

    shapes = [(5, 3, 1), (2, 1, 6), (9, 4, 4), (1, 2, 3)]  # (prompt, chosen, rejected) tokens
    return [PairSeq(ids(p), ids(c), ids(r)) for p, c, r in shapes]


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_shared_prompt_rows_equal_two_rows_in_value_and_gradient():
    model, _ = tiny_chat_model(seed=3, context=14)  # rows of 17 > context ≥ prompt + longer completion
    pairs = _pairs(model.cfg.vocab_size)
    two = pair_batch(pairs, pad_id=0)
    one = shared_prompt_batch(pairs, pad_id=0)
    assert one["ids"].shape == (4, 9 + 4 + 4)  # P rows, as wide as the longest prompt + both completions
    ref = torch.randn(4, dtype=torch.float32)

    def loss(lp):
        return dpo_loss(lp[:4], lp[4:], ref, ref + 1.0, beta=0.5)[0]

    lp_two = sequence_logprobs(model, two["ids"], two["completion_mask"])
    loss(lp_two).backward()
    g_two = _grads(model)
    model.zero_grad()
    lp_one = shared_prompt_logps(model, one)
    loss(lp_one).backward()
    torch.testing.assert_close(lp_one, lp_two, atol=2e-5, rtol=0)
    torch.testing.assert_close(one["lengths"], two["completion_mask"].sum(1))
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, g_two[name], atol=1e-5, rtol=1e-4, msg=name)


def test_selected_logprobs_at_every_position_is_token_logprobs():
    model, _ = tiny_chat_model(seed=1)
    ids = torch.randint(1, model.cfg.vocab_size, (3, 7))
    t = ids.shape[1]
    source = torch.tensor([b * t + i for b in range(3) for i in range(t - 1)])
    targets = ids[:, 1:].reshape(-1)
    lp = selected_logprobs(model, ids, source, targets, rows=5)  # several head chunks
    torch.testing.assert_close(lp, token_logprobs(model, ids).reshape(-1), atol=1e-6, rtol=0)


def test_a_dpo_step_feeds_one_row_per_pair():
    pairs = _pairs(50)
    b = make_batch(pairs, torch.zeros(4, 2, dtype=torch.float64), [0, 2], pad_id=0)
    assert b["ids"].shape == (2, 9 + 4 + 4) and b["ref_logps"].shape == (2, 2)
