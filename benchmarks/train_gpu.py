"""Training throughput and MFU on one GPU: the gpt2-124m shape, bf16 autocast, compiled, 16 × 1024.

Runs the real training loop (`llmlab.train.loop.train`, the code `llmlab pretrain` runs) on random
tokens and reports the steady-state rate of the last logging interval (compilation and warmup
excluded):
    MFU = flops_per_token · tokens/s / 989e12      (H100/H200 dense bf16 peak)
with flops_per_token = 6·N + attention (`ModelConfig.flops_per_token`, causal).

    python benchmarks/train_gpu.py                 # on a CUDA machine (target: MFU ≥ 50%)
    python benchmarks/train_gpu.py --dry-run       # CPU, tiny shape, no compile: checks the script runs
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

PEAK_BF16 = 989e12


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-124m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=60, help="total steps; the rate is that of the last 20")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, 4 steps, no compile")
    args = ap.parse_args()

    from llmlab.config import TrainSection
    from llmlab.data.batches import sample_windows
    from llmlab.model import Transformer, preset
    from llmlab.train.loop import train
    from llmlab.train.losses import lm_loss

    if args.dry_run:
        args.preset, args.batch, args.seq, args.steps, args.no_compile = "tiny", 2, 64, 4, True
    elif not torch.cuda.is_available():
        print("no CUDA device; use --dry-run to check the script on CPU", file=sys.stderr)
        return 1
    cfg = preset(args.preset, context=args.seq)
    torch.manual_seed(0)
    model = Transformer(cfg)
    tokens = (
        np.random.default_rng(0)
        .integers(0, cfg.vocab_size, 10_000_000 if not args.dry_run else 10_000, dtype=np.int64)
        .astype(np.uint16 if cfg.vocab_size <= 65536 else np.uint32)
    )
    log_every = 20 if args.steps > 20 else max(1, args.steps // 2)
    tc = TrainSection(
        steps=args.steps,
        batch_size=args.batch,
        lr=6e-4,
        min_lr=6e-5,
        warmup=10,
        eval_every=10**9,
        save_every=0,
        log_every=log_every,
        compile=not args.no_compile,
        dtype="auto",
        device="cpu" if args.dry_run else "cuda",
    )

    def get_batch(step: int, micro: int):
        return sample_windows(tokens, args.seq, args.batch, seed=0, step=step)

    summary = train(
        model, tc, None, get_batch, lm_loss, flops_per_token=cfg.flops_per_token(args.seq), verbose=True
    )
    tps = summary["tokens_per_s"]
    achieved = cfg.flops_per_token(args.seq) * tps
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else "cpu"
    print(
        f"shape: {args.preset} {cfg.n_layer}x{cfg.d_model}, vocab {cfg.vocab_size}, batch {args.batch}x{args.seq}, "
        f"{'bf16 autocast' if device != 'cpu' else 'fp32'}, {'compiled' if tc.compile else 'eager'}, {device}"
    )
    print(f"tokens/s: {tps:,.0f}  ({cfg.flops_per_token(args.seq) / 1e6:.0f} MFLOP/token)")
    print(f"MFU vs 989 TFLOP/s: {achieved / PEAK_BF16:.1%} (target >= 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
