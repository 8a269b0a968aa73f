"""GRPO's batches: one row per group and one row per sample give the log-probs, loss and gradient of
`rollout.rl_batch` + `token_logprobs` (the plain layout), and a completion that fills the context trains."""

from __future__ import annotations

import pytest
import torch

from llmlab.align.grpo import GRPO_LOSS_TYPES, grpo_loss
from llmlab.align.grpo_batch import batch_logprobs, group_batch, sample_rows_batch
from llmlab.align.rollout import Sample, rl_batch
from llmlab.model import ModelConfig, Transformer
from llmlab.model.logprobs import token_logprobs

NAN = float("nan")


def _samples() -> list[Sample]:
    """Two groups of k = 3 with ragged prompts and completions (one of a single token, stop tokens
    without an engine log-prob)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for prompt, lengths in (([1, 5, 9, 2], [3, 1, 5]), ([7, 3], [4, 2, 2])):
        for c in lengths:
            tokens = torch.randint(0, 30, (c,), generator=g).tolist()
            lps = (-torch.rand(c, generator=g)).tolist()
            finished = c % 2 == 0
            out.append(Sample(prompt, tokens, [*lps[:-1], NAN] if finished else lps, finished))
    return out


def _model() -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=16)
    return Transformer(cfg).double()  # (its norms still round to float32: tolerances ~1e-7)


def _per_sample_grid(samples, values: torch.Tensor) -> torch.Tensor:
    """`rl_batch`'s [B, T−1] layout → the completion grid [B, C] (cell j: completion token j)."""
    C = max(len(s.tokens) for s in samples)
    grid = values.new_zeros(len(samples), C)
    for b, s in enumerate(samples):
        start = len(s.prompt) - 1
        grid[b, : len(s.tokens)] = values[b, start : start + len(s.tokens)]
    return grid


def test_group_rows_read_each_prompt_once():
    b = group_batch(_samples(), 3, pad_id=0)
    assert b["ids"].shape == (2, 4 + 2 + 0 + 4) and b["mask"].shape == (6, 5)  # not 6 rows of 4 + 4
    assert b["mask"].sum(1).tolist() == [3, 1, 5, 4, 2, 2]
    assert b["positions"][1, :7].tolist() == [0, 1, 2, 3, 4, 2, 2]  # completions restart at p


@pytest.mark.parametrize(
    "layout,loss_type",
    [("group", t) for t in GRPO_LOSS_TYPES] + [("rows", "grpo"), ("rows", "dr_grpo")],
)
def test_both_layouts_give_the_plain_logprobs_loss_and_gradient(layout, loss_type):
    samples, model = _samples(), _model()
    rows = rl_batch(samples, 0)
    groups = group_batch(samples, 3, 0) if layout == "group" else sample_rows_batch(samples, 0)
    lp_rows, ent_rows = token_logprobs(model, rows["ids"], with_entropy=True)
    lp_grid, ent_grid = batch_logprobs(model, groups, with_entropy=True)
    torch.testing.assert_close(lp_grid, _per_sample_grid(samples, lp_rows), atol=1e-6, rtol=0)
    torch.testing.assert_close(ent_grid, _per_sample_grid(samples, ent_rows), atol=1e-6, rtol=0)
    old = _per_sample_grid(samples, rows["old_logps"])
    torch.testing.assert_close(groups["old_logps"], old, atol=0, rtol=0, equal_nan=True)
    old = torch.nan_to_num(old, nan=-0.5).double()
    adv = torch.tensor([1.0, -0.5, -0.5, 0.3, 0.2, -0.5], dtype=torch.float64)

    def loss_and_grad(lp, mask):
        s, n, _ = grpo_loss(lp, old, adv, mask, loss_type=loss_type, max_completion_length=6)
        model.zero_grad()
        (s / n).backward()
        return s / n, [p.grad.clone() for p in model.parameters()]

    mask = groups["mask"].double()
    want, want_grads = loss_and_grad(_per_sample_grid(samples, token_logprobs(model, rows["ids"])), mask)
    got, got_grads = loss_and_grad(batch_logprobs(model, groups), mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-8, rtol=1e-5)


def test_a_group_must_share_its_prompt():
    samples = _samples()
    with pytest.raises(ValueError, match="share one non-empty prompt"):
        group_batch(samples, 2, 0)  # groups of 2 straddle the two prompts
    with pytest.raises(ValueError, match="groups of 4"):
        group_batch(samples, 4, 0)


def test_the_group_layout_is_taken_only_where_it_costs_less():
    from llmlab.align.grpo_batch import group_rows_pay, rollout_batch

    cfg = ModelConfig(vocab_size=300, n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128, context=1024)

    def group(p, c, k=8):
        return [Sample(list(range(1, p + 1)), [5] * c, [-1.0] * c, False) for _ in range(k)]

    assert group_rows_pay(group(p=12, c=8), 8, cfg)  # the arithmetic task: the prompt dominates
    assert not group_rows_pay(group(p=4, c=200), 8, cfg)  # long answers: W_g² attention outgrows it
    model = Transformer(cfg)
    assert "attn_mask" in rollout_batch(group(12, 8), 8, 0, model)
    assert "attn_mask" not in rollout_batch(group(4, 200), 8, 0, model)
    assert "attn_mask" not in rollout_batch(group(12, 8), 8, 0, torch.nn.Linear(2, 2))  # no Transformer


def test_grpo_trains_on_completions_that_fill_the_context(chat_dir, tmp_path, monkeypatch):
    """Long, hot completions run into the context: the rollout stops them there, and the rows train
    instead of failing the model's context check."""
    import llmlab.align.grpo_train as gt

    from .conftest import recipe

    lengths, real = [], gt.rollout_batch

    def recorded(samples, *a):
        lengths.extend(len(s.prompt) + len(s.tokens) for s in samples)
        return real(samples, *a)

    monkeypatch.setattr(gt, "rollout_batch", recorded)
    sets = ["grpo.steps=1", "grpo.k=2", "grpo.batch_size=2", "grpo.max_new_tokens=60", "grpo.temperature=2.0"]
    assert gt.grpo(recipe(*sets), chat_dir, tmp_path / "g", verbose=False)["steps"] == 1
    assert max(lengths) == 48  # the tiny chat model's context: some completion was cut there


def test_both_layouts_score_a_row_one_past_the_context_alike():
    model = _model()  # context 16
    s = [
        Sample([1, 2, 3, 4], list(range(5, 18)), [-1.0] * 13, False),
        Sample([1, 2, 3, 4], [7], [-1.0], True),
    ]
    assert len(s[0].prompt) + len(s[0].tokens) == model.cfg.context + 1
    lp_group, lp_rows = (batch_logprobs(model, b) for b in (group_batch(s, 2, 0), sample_rows_batch(s, 0)))
    assert torch.isfinite(lp_group).all()
    torch.testing.assert_close(lp_group, lp_rows, atol=1e-6, rtol=0)


def test_a_model_without_an_lm_head_scores_from_its_full_logits_alike():
    class FullLogits(torch.nn.Module):  # what an imported GPT-2 network offers: ids → logits
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(ids)

    samples, model = _samples(), _model()
    batch = sample_rows_batch(samples, 0)
    lp, ent = batch_logprobs(FullLogits(model), batch, with_entropy=True)
    want_lp, want_ent = batch_logprobs(model, batch, with_entropy=True)
    torch.testing.assert_close(lp, want_lp, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent, want_ent, atol=1e-6, rtol=0)
