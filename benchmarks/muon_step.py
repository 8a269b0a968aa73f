"""One Muon step over a model's hidden matrices: ours (`llmlab.train.optim.Muon`, float32
Newton–Schulz on CPU) against `torch.optim.Muon` (the anchor, bfloat16 Newton–Schulz), in the same run.

Both step the same matrices (the attention and MLP projections of the tiny preset, 4 × 192, as
`muon_split` picks them) with the same random gradients; the time is the best of --rounds rounds of
--reps steps. On a CPU with bfloat16 units (AVX512-BF16, AMX) torch's is fast too; on one without
(AVX2 only) it is emulated, which is why ours exists. The lines to read: each one's ms per step,
and the ratio.

    python benchmarks/muon_step.py                    # the tiny preset, 2 threads
    python benchmarks/muon_step.py --threads 1 --reps 5
"""

from __future__ import annotations

import argparse
import time


def best_ms(opt, params, reps: int, rounds: int) -> float:
    import torch

    best = float("inf")
    for _ in range(rounds):
        for p in params:
            p.grad = torch.randn_like(p)
        t = time.perf_counter()
        for _ in range(reps):
            opt.step()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from llmlab.model import Transformer
    from llmlab.model.config import preset
    from llmlab.train.optim import Muon, muon_split, param_groups

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Transformer(preset(args.preset, vocab_size=2048, context=512))
    groups, _ = muon_split(model, param_groups(model, 0.1))
    params = [p for g in groups for p in g["params"]]
    print(
        f"{len(params)} hidden matrices ({sum(p.numel() for p in params) / 1e6:.2f}M values), "
        f"{args.threads} threads, torch {torch.__version__}, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    ours = best_ms(Muon(groups, lr=0.02), params, args.reps, args.rounds)
    theirs = best_ms(
        torch.optim.Muon(groups, lr=0.02, adjust_lr_fn="original"), params, args.reps, args.rounds
    )
    print(f"ours (float32 Newton–Schulz)        {ours:9.1f} ms/step")
    print(f"torch.optim.Muon (bfloat16)         {theirs:9.1f} ms/step")
    print(f"ratio torch / ours                  {theirs / ours:9.2f}x")


if __name__ == "__main__":
    main()
