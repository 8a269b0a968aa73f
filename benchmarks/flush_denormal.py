"""Training step time on CPU with subnormal floats computed as zero and without.

x86 cores do arithmetic on a subnormal float (|x| < 1.2e-38) in microcode, ~100× slower than on a
normal one. Sharp attention makes them: a softmax weight exp(s − max) underflows to a subnormal once
a score sits ~87 below its row's maximum, and the attention kernels go on computing with it. A model
that learns to copy grows such heads, so the tool-use midtraining of recipes/cpu-demo.toml slowed
down as it learned (its module outputs, gradients and weights hold no subnormals; the kernels'
intermediates do). Every `llmlab` command therefore starts torch's OpenMP workers with
`torch.set_flush_denormal(True)` (`llmlab.cli.flush_subnormals`), and `train()` sets it in its own
thread while it trains. The flag belongs to a thread and a new thread copies its creator's, so each
timing here runs in a fresh process that sets it before any torch operation.

Timed: forward + backward of the summed cross-entropy, 8 rows × 512 tokens, best of --rounds
processes of --reps steps. Cases: the tiny preset (4 × 192) as initialised on random ids; the same
with every head sharpened (W_q and W_k × 20: scores spread ~30 around their mean, so many of a row's
weights fall between e^-87 and e^-104, the subnormal band); and with --model a trained model on
tool-use conversations.

    python benchmarks/flush_denormal.py                                # the two built-in cases
    python benchmarks/flush_denormal.py --model runs/tools/midtrain    # + a midtrained model
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SHARPEN = 20.0


def tool_batch(tok, rows: int, length: int):
    """`rows` packed windows of tool-use conversations: inputs and targets (-100 off the assistant)."""
    import torch

    from llmlab.data import midtrain
    from llmlab.tokenizer.chat import render_chat

    weights = {f: 0.0 for f in midtrain.FAMILIES} | {"tool_use": 1.0}
    ids, mask = [], []
    for conv in midtrain.conversations(8 * rows, 3, weights, questions=5):
        i, m = render_chat(tok, conv)
        ids += i
        mask += m
    n = rows * (length + 1)
    x = torch.tensor(ids[:n]).view(rows, length + 1)
    keep = torch.tensor(mask[:n]).view(rows, length + 1)[:, 1:].bool()
    return x[:, :-1], x[:, 1:].masked_fill(~keep, -100)


def build(case: str, model_dir: str | None, rows: int):
    """(model, inputs, targets) for one case."""
    import torch

    from llmlab.model import Transformer
    from llmlab.model.config import preset

    if case == "model":
        from llmlab.model.load import load_model_dir

        model, tok = load_model_dir(model_dir)
        return (model, *tool_batch(tok, rows, model.cfg.context))
    torch.manual_seed(0)
    model = Transformer(preset("tiny", context=512, vocab_size=2048))
    if case == "sharp":
        with torch.no_grad():
            for block in model.blocks:
                block.attn.wq.weight.mul_(SHARPEN)
                block.attn.wk.weight.mul_(SHARPEN)
    ids = torch.randint(0, 2048, (rows, 513), generator=torch.Generator().manual_seed(1))
    return model, ids[:, :-1], ids[:, 1:]


def one_timing(args) -> None:
    """In this fresh process: the flag first, then the steps; prints seconds per step."""
    import torch

    torch.set_flush_denormal(args.flushed == "yes")
    torch.set_num_threads(args.threads)
    import torch.nn.functional as F

    model, x, y = build(args.case, args.model, args.rows)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").backward()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(args.reps):
        step()
    print((time.perf_counter() - t) / args.reps)


def best_time(args, case: str, flushed: str) -> float:
    cmd = [sys.executable, __file__, *sys.argv[1:], "--case", case, "--flushed", flushed]
    runs = [subprocess.run(cmd, check=True, capture_output=True, text=True) for _ in range(args.rounds)]
    return min(float(r.stdout) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="also time this model directory (a run's midtrain/, say)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--rounds", type=int, default=2, help="processes per case and setting (best kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # a child's job
    ap.add_argument("--flushed", choices=["yes", "no"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        return one_timing(args)
    cases = {"tiny as initialised": "fresh", f"tiny, W_q and W_k × {SHARPEN:g}": "sharp"}
    if args.model:
        cases[args.model] = "model"
    print(f"{args.rows} × 512 tokens, forward + backward, {args.threads} threads, best of {args.rounds}")
    for name, case in cases.items():
        kept, flushed = best_time(args, case, "no"), best_time(args, case, "yes")
        print(
            f"{name:<32} subnormals kept {kept:.3f} s/step, flushed {flushed:.3f} s/step, "
            f"ratio (kept / flushed): {kept / flushed:.2f}×"
        )


if __name__ == "__main__":
    main()
