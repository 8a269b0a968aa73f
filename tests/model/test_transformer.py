import torch

from llmlab.model import KVCache, ModelConfig, Transformer, preset


def tiny(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=97, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=32, **kw)


def test_causality():
    torch.manual_seed(0)
    m = Transformer(tiny()).eval()
    ids = torch.randint(0, 97, (2, 16))
    base = m(ids)
    for t in (0, 5, 15):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 97
        out = m(changed)
        assert torch.equal(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t], base[:, t])


def test_kv_cache_equals_full_recompute():
    torch.manual_seed(0)
    m = Transformer(tiny()).eval()
    ids = torch.randint(0, 97, (3, 20))
    full = m(ids)
    cache = KVCache(m.cfg, batch_size=3, max_len=32)
    parts = [m(ids[:, :7], cache=cache, cache_pos=0)]
    parts += [m(ids[:, t : t + 1], cache=cache, cache_pos=t) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_param_count_matches_hand_count():
    for kw in ({}, {"tie_embeddings": False}, {"qk_norm": True}):
        cfg = tiny(**kw)
        assert Transformer(cfg).num_params() == cfg.num_params()
        assert Transformer(cfg).num_params(non_embedding=True) == cfg.num_params(non_embedding=True)
    # By hand for the tied tiny config: per block q 32·32 + k,v 2·32·16 + o 32·32 + mlp 3·32·64 + 2 norms·32
    per_block = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64 + 2 * 32
    assert tiny().num_params() == 2 * per_block + 32 + 97 * 32
    assert preset("gpt2-124m").num_params() > 120e6
