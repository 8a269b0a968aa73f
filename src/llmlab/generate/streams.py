"""Per-row random streams for sampling, drawn for the whole batch at once.

A row (one sample) has a 32-bit key from its seed and a count n of the uniforms it has drawn; its
n-th uniform is a hash of (key, n) alone (a counter-based generator, as Philox is in spirit):

    u(key, n) = (fmix32(key ^ fmix32(n)) + ½) / 2³²   ∈ (0, 1)

fmix32 being MurmurHash3's finaliser, computed in int64 tensor ops. A batch of R rows draws its R
uniforms in a dozen tensor ops, and a row draws the same numbers alone or in any batch, in any slot.
`inverse_cdf` turns one uniform per row into a token: the smallest v with Σ_{w≤v} p_w > u.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """x · c mod 2³² for x in [0, 2³²) (an int64 tensor, or an int) and a 32-bit constant c, in two
    16-bit halves of c so that no int64 product overflows: x·c ≡ x·c_lo + ((x·c_hi mod 2¹⁶) << 16)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def fmix32(x):
    """MurmurHash3's 32-bit finaliser, a bijection on [0, 2³²) in which every input bit flips each
    output bit with probability ~½: h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35;
    h ^= h >> 16 (all mod 2³²; the values are non-negative, so >> is the logical shift). Works on
    int64 tensors and on ints alike."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def stream_key(seed: int) -> int:
    """A row's 32-bit stream key from its 64-bit seed (lo, hi words): key = fmix32(fmix32(lo) ^ hi)."""
    s = int(seed) % 2**64
    return fmix32(fmix32(s & MASK32) ^ (s >> 32))


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """u_n = (fmix32(key ^ fmix32(n)) + ½) / 2³² ∈ (0, 1), float64, for each row's key and draw
    index n: a counter-based stream (the n-th draw depends on (key, n) only), so a row draws the
    same numbers whatever else shares its batch, and all rows draw in a few tensor ops."""
    return (fmix32(keys ^ fmix32(counters)).double() + 0.5) / 2.0**32


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v ~ softmax(z) per row from one uniform u each: with w_v = e^{z_v − max z} (float64) and
    c_v = Σ_{x≤v} w_x, the first v with c_v > u · c_V. Tokens of weight 0 (z = −∞) are never
    chosen: their c_v equals the previous one, and u < 1 keeps u · c_V below c_V."""
    w = (logits.double() - logits.double().amax(-1, keepdim=True)).exp()
    cdf = w.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp(max=w.shape[-1] - 1)
