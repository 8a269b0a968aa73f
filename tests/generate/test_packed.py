"""One forward over several parts (a decode step and prompt chunks) equals each part run alone."""

from __future__ import annotations

import torch

from llmlab.generate.packed import Part, packed_forward
from llmlab.model.kv_cache import KVCache

from .conftest import tiny_model


def _prefilled_cache(model, prompts: list[list[int]], max_len: int = 40) -> KVCache:
    """A cache whose row b holds prompts[b] (each prefilled alone)."""
    cache = KVCache(model.cfg, len(prompts), max_len=max_len)
    for b, p in enumerate(prompts):
        model(torch.tensor([p]), cache=cache.rows(b, b + 1), cache_pos=0)
    return cache


@torch.inference_mode()
def test_a_packed_pass_equals_its_parts_alone():
    torch.manual_seed(0)
    model = tiny_model().eval()
    ragged = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]  # decode rows of different lengths
    last = torch.tensor([[11], [12], [13]])
    pos = torch.tensor([len(p) for p in ragged])
    key_ok = (torch.arange(int(pos.max()) + 1)[None] <= pos[:, None])[:, None, None, :]
    chunk = torch.tensor([[20, 21, 22, 23]])  # a prompt's second chunk, after 3 tokens already cached

    def parts() -> tuple[list[Part], KVCache, KVCache]:
        dec, pre = _prefilled_cache(model, ragged), _prefilled_cache(model, [[17, 18, 19]])
        return (
            [
                Part(last, pos[:, None], dec, pos, key_ok),
                Part(chunk, torch.arange(3, 7)[None], pre, 3, all_logits=True),
            ],
            dec,
            pre,
        )

    packed, dec_p, pre_p = parts()
    got_dec, got_pre = packed_forward(model, packed)
    _, dec_a, pre_a = parts()
    want_dec = model(last, positions=pos[:, None], attn_mask=key_ok, cache=dec_a, cache_pos=pos)[:, -1]
    want_pre = model(chunk, cache=pre_a, cache_pos=3)[0]
    assert got_dec.shape == (3, model.cfg.vocab_size) and got_pre.shape == (4, model.cfg.vocab_size)
    torch.testing.assert_close(got_dec, want_dec, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_pre, want_pre, atol=1e-5, rtol=1e-5)
    for a, b in zip((*dec_p.k, *dec_p.v, *pre_p.k), (*dec_a.k, *dec_a.v, *pre_a.k)):  # caches written alike
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the last-position form of a part is the last row of its all-positions form
    last_only, *_ = parts()
    last_only[1].all_logits = False
    torch.testing.assert_close(packed_forward(model, last_only)[1], got_pre[-1:], atol=1e-5, rtol=1e-5)
