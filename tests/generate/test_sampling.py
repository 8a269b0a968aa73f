"""Logits processors: pinned to transformers' own warpers, and to the formulas on hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.errors import UserError
from llmlab.generate.sampling import BatchSampler, SamplingParams

lp = pytest.importorskip("transformers.generation.logits_process")


def _logits(B=4, V=50, seed=0):
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 3


def _ours(logits, **kw):
    B = logits.shape[0]
    return BatchSampler([SamplingParams(**kw)] * B, logits.shape[-1]).process(logits)


@pytest.mark.parametrize(
    "kw,theirs",
    [
        (dict(temperature=0.7), lambda: lp.TemperatureLogitsWarper(0.7)),
        (dict(top_k=7), lambda: lp.TopKLogitsWarper(7)),
        (dict(top_p=0.8), lambda: lp.TopPLogitsWarper(0.8)),
        (dict(top_p=0.3), lambda: lp.TopPLogitsWarper(0.3)),
        (dict(min_p=0.1), lambda: lp.MinPLogitsWarper(0.1)),
    ],
)
def test_warpers_equal_transformers(kw, theirs):
    x = _logits()
    want = theirs()(torch.zeros(4, 1, dtype=torch.long), x.clone())
    got = _ours(x, **kw)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_chain_order_equals_transformers_chain():
    """Temperature first, then top-k, top-p, min-p: HF's order."""
    x = _logits(seed=1)
    chain = lp.LogitsProcessorList(
        [
            lp.TemperatureLogitsWarper(0.5),
            lp.TopKLogitsWarper(20),
            lp.TopPLogitsWarper(0.9),
            lp.MinPLogitsWarper(0.05),
        ]
    )
    want = chain(torch.zeros(4, 1, dtype=torch.long), x.clone())
    got = _ours(x, temperature=0.5, top_k=20, top_p=0.9, min_p=0.05)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_repetition_penalty_equals_transformers():
    x = _logits()
    history = torch.tensor([[1, 2, 3], [4, 4, 5], [0, 9, 9], [7, 8, 49]])
    want = lp.RepetitionPenaltyLogitsProcessor(1.3)(history, x.clone())
    s = BatchSampler([SamplingParams(repetition_penalty=1.3)] * 4, 50)
    for b in range(4):
        s.observe_prompt(b, history[b].tolist())
    torch.testing.assert_close(s.process(x), want)


def test_top_p_keeps_the_token_that_crosses_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    z = probs.log()
    kept = lambda p: (~torch.isinf(_ours(z, top_p=p))).sum().item()  # noqa: E731
    assert kept(0.5) == 1  # 0.5 reaches 0.5 exactly with the first token
    assert kept(0.51) == 2  # the second token crosses 0.51 and is kept
    assert kept(0.8) == 2
    assert kept(0.81) == 3
    assert kept(1.0) == 4
    assert kept(0.01) == 1  # the most likely token always survives


def test_presence_frequency_and_logit_bias_formula():
    z = torch.zeros(1, 5)
    s = BatchSampler([SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias={4: 2.0})], 5)
    s.observe(torch.tensor([1]))
    s.observe(torch.tensor([1]))
    s.observe(torch.tensor([2]))
    got = s.process(z)[0]
    # z - presence·[c>0] - frequency·c + bias, with c = (0, 2, 1, 0, 0)
    assert got.tolist() == pytest.approx([0.0, -0.5 - 0.5, -0.5 - 0.25, 0.0, 2.0])
    # Penalties count generated tokens only: the prompt does not count.
    s2 = BatchSampler([SamplingParams(presence_penalty=1.0)], 5)
    s2.observe_prompt(0, [3])
    assert s2.process(z)[0, 3] == 0


def test_rows_keep_their_own_settings():
    x = _logits(B=3)
    params = [
        SamplingParams(temperature=0),
        SamplingParams(top_k=2),
        SamplingParams(top_p=0.5, temperature=2),
    ]
    got = BatchSampler(params, 50).process(x)
    for b, p in enumerate(params):
        torch.testing.assert_close(
            got[b], _ours(x[b : b + 1], **{k: getattr(p, k) for k in ("temperature", "top_k", "top_p")})[0]
        )


def test_seeded_sampling_is_reproducible_and_matches_the_distribution():
    z = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(1, 4)
    draw = lambda seed, n: [  # noqa: E731
        int(s)
        for s in (lambda bs: [bs.sample(bs.process(z))[0] for _ in range(n)])(
            BatchSampler([SamplingParams(seed=seed)], 4)
        )
    ]
    a, b, c = draw(5, 4000), draw(5, 4000), draw(6, 4000)
    assert a == b and a != c
    freq = torch.bincount(torch.tensor(a), minlength=4).float() / len(a)
    torch.testing.assert_close(freq, z[0].softmax(-1), atol=0.03, rtol=0)


def test_greedy_and_distribution():
    x = _logits(B=2, seed=1)
    assert torch.equal(BatchSampler([SamplingParams(temperature=0)] * 2, 50).sample(x), x.argmax(-1))
    p = BatchSampler([SamplingParams(temperature=0)], 50).probs(x)  # one row's setting, two positions
    assert torch.equal(p.argmax(-1), x.argmax(-1)) and p.sum().item() == 2
    setting = SamplingParams(temperature=0.5, top_k=3, logit_bias={7: 3.0})
    q = BatchSampler([setting], 50).probs(x)
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    # Each position gets its own top-k threshold, as if it were a row with that setting.
    assert ((q > 0).sum(-1) == 3).all()
    torch.testing.assert_close(q, BatchSampler([setting] * 2, 50).probs(x))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=-1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2), "min_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(stop=[""]), "stop"),
    ],
)
def test_bad_settings_are_user_errors(kw, msg):
    with pytest.raises(UserError, match=msg):
        SamplingParams(**kw).validate()
