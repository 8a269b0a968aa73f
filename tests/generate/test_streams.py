"""The per-row random streams of `BatchSampler.sample`: MurmurHash3's finaliser in int64 tensor ops,
counter-based uniforms, the batched inverse-CDF draw, and rows that draw alike alone or batched."""

from __future__ import annotations

import random

import torch

from llmlab.generate.sampling import BatchSampler, SamplingParams
from llmlab.generate.streams import fmix32, inverse_cdf, stream_key, uniforms


def _fmix32_reference(h: int) -> int:
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def test_fmix32_is_murmur3s_finaliser_on_tensors_and_ints():
    xs = [0, 1, 2**31, 2**32 - 1] + [random.Random(0).getrandbits(32) for _ in range(2000)]
    want = [_fmix32_reference(x) for x in xs]
    assert want[1] == 0x514E28B7  # the published fmix32(1)
    assert fmix32(torch.tensor(xs)).tolist() == want  # no int64 overflow on the way
    assert [fmix32(x) for x in xs] == want


def test_uniforms_are_a_function_of_key_and_count_and_look_uniform():
    keys = torch.tensor([stream_key(s) for s in range(200)]).repeat_interleave(100)
    counts = torch.arange(100).repeat(200)
    u = uniforms(keys, counts)
    assert u.dtype == torch.float64 and u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert len(set(u.tolist())) > 0.999 * len(u)  # 200 streams, no two alike
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(0))  # batch order is irrelevant
    assert torch.equal(uniforms(keys[perm], counts[perm]), u[perm])
    assert stream_key(-1) == stream_key(2**64 - 1) and stream_key(5) != stream_key(6)


def test_inverse_cdf_skips_masked_tokens_at_the_extreme_uniforms_and_follows_p():
    inf = float("inf")
    z = torch.tensor([[-inf, 0.0, -inf, 1.0, -inf]] * 2)
    extremes = torch.tensor([0.5 / 2**32, 1 - 0.5 / 2**32], dtype=torch.float64)
    assert inverse_cdf(z, extremes).tolist() == [1, 3]
    n = 40_000
    z = torch.tensor([[0.0, 1.0, 2.0, -inf, -1.0]]).expand(n, 5)
    v = inverse_cdf(z, uniforms(torch.full((n,), stream_key(3)), torch.arange(n)))
    freq = torch.bincount(v, minlength=5).float() / n
    torch.testing.assert_close(freq, z[0].softmax(-1), atol=0.01, rtol=0)


def test_a_row_draws_the_same_tokens_alone_and_in_a_batch():
    params = [SamplingParams(seed=11), SamplingParams(temperature=0), SamplingParams(seed=12, top_k=5)]
    batch, alone = BatchSampler(params, 20), [BatchSampler([p], 20) for p in params]
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        z = torch.randn(3, 20, generator=g) * 2
        together = batch.sample(batch.process(z))
        one_by_one = [s.sample(s.process(z[b : b + 1]))[0] for b, s in enumerate(alone)]
        assert together.tolist() == [int(t) for t in one_by_one]
    # a moved slot (the engine compacting its running rows) keeps its stream where it was
    batch.move(2, 0)
    z = torch.randn(1, 20, generator=g)
    assert batch.sample(batch.process(z)).tolist() == alone[2].sample(alone[2].process(z)).tolist()
