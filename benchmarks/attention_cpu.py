"""Causal attention forward + backward on CPU: PyTorch's SDPA (flash kernel) vs the alternatives.

Why it exists: in `benchmarks/train_cpu.py` the matmuls of the `small` training step already run at
the reference matmul rate, and attention is what keeps the step under 85% of it (docs/pretraining.md).
This measures whether another formulation of the same math would be faster, at the `small` training
shape (batch 4, 8 heads, 512 tokens, head dim 64, fp32):

    sdpa            F.scaled_dot_product_attention(is_causal=True)       (the anchor; what the model uses)
    math, compiled  softmax(QKᵀ/√h + causal mask) V, torch.compile'd
    chunked c       query blocks of c rows attend to keys 0..end of their block only, so about
                    (n + 1) / 2n of the T×T scores are computed (n = T / c), torch.compile'd
    flex            FlexAttention with a causal block mask (reported if its CPU backward exists)

Also prints the causal attention FLOPs (forward 4·T²·h/2 per head, backward twice that, no
recomputation) as a rate, next to a 1024³ fp32 matmul measured in the same run.

    python benchmarks/attention_cpu.py
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from llmlab.train.mfu import measure_matmul_flops


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def math_attention(q, k, v):
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return s.softmax(-1) @ v


def chunked_attention(q, k, v, c: int):
    T = q.shape[2]
    tri = torch.ones(c, c, dtype=torch.bool).tril()
    outs = []
    for i in range(T // c):
        end = (i + 1) * c
        s = (q[:, :, i * c : end] @ k[:, :, :end].transpose(-1, -2)) / math.sqrt(q.shape[-1])
        mask = torch.cat([torch.ones(c, i * c, dtype=torch.bool), tri], dim=1)
        outs.append(s.masked_fill(~mask, float("-inf")).softmax(-1) @ v[:, :, :end])
    return torch.cat(outs, dim=2)


def fwd_bwd(fn, q, k, v, grad) -> float:
    t = time.perf_counter()
    fn(q, k, v).backward(grad)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds (best of each is kept)")
    args = ap.parse_args()
    B, H, T, h = args.batch, args.heads, args.seq, args.head_dim
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, h, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, h)
    ref = sdpa(q, k, v)

    candidates = [("sdpa (anchor)", sdpa), ("math, compiled", torch.compile(math_attention))]
    for c in (64, 128, 256):
        if T % c == 0:
            candidates.append(
                (f"chunked {c}, compiled", torch.compile(lambda q, k, v, c=c: chunked_attention(q, k, v, c)))
            )
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        mask = create_block_mask(lambda b, hh, qi, ki: qi >= ki, None, None, T, T, device="cpu")
        candidates.append(
            ("flex, compiled", torch.compile(lambda q, k, v: flex_attention(q, k, v, block_mask=mask)))
        )
    except ImportError:
        pass

    causal_flops = 3 * 4 * T * T * h / 2 * B * H  # forward + backward (2x), causal half, no recompute
    print(f"causal attention fwd+bwd, fp32, {torch.get_num_threads()} threads: B={B} H={H} T={T} h={h}")
    ready = []
    for name, fn in candidates:  # check and warm up (compile) each one
        try:
            with torch.no_grad():
                err = (fn(q, k, v) - ref).abs().max().item()
            fwd_bwd(fn, q, k, v, grad), fwd_bwd(fn, q, k, v, grad)
            ready.append((name, fn, err))
        except Exception as e:  # e.g. FlexAttention has no CPU backward
            print(f"{name:>22}: not available ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
    best = {name: float("inf") for name, _, _ in ready}
    for _ in range(args.reps):  # rounds interleave the candidates, so background load hits all alike
        for name, fn, _ in ready:
            best[name] = min(best[name], fwd_bwd(fn, q, k, v, grad))
    t_ref = best[ready[0][0]]
    for name, _, err in ready:
        t = best[name]
        print(
            f"{name:>22}: {t * 1e3:7.1f} ms  ({t_ref / t:.2f}x sdpa's speed; "
            f"{causal_flops / t / 1e9:.0f} GFLOP/s on the causal FLOPs; max |Δ| vs sdpa {err:.1e})"
        )
    print(f"fp32 matmul rate (1024^3, same run): {measure_matmul_flops(1024, seconds=0.5) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
