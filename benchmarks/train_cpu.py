"""Training-step throughput on CPU: our model vs HF `transformers` LlamaForCausalLM of identical shape.

Both models get the same weights (ours copied into HF through the one-to-one weight-name map), the
same batch, fp32, the same thread count, the same fused AdamW and the same cross-entropy, so the
only difference is the network code. Ours runs the way `llmlab.train.loop` runs it with
`train.compile=true` (model + loss under `torch.compile`); HF runs eager (its own supported path).

A training step costs `flops_per_token` = 6·N + attention FLOPs per token; achieved FLOP/s divided by
the rate of a large fp32 matmul measured in the same run says how close the step is to the machine's
practical limit (matmuls are ~all of the FLOPs, so 100% would mean every non-matmul op were free).

    python benchmarks/train_cpu.py                      # the `small` preset, batch 4 × 512
    python benchmarks/train_cpu.py --preset tiny --batch 16 --seq 256

Timings alternate ours / HF / a matmul round by round and report medians, so load from other
processes hits all three alike; compare the ratio lines, not absolute numbers, on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def build(preset_name: str, vocab: int, seq: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmlab.model import Transformer, preset
    from llmlab.model.hf import hf_name, llama_config

    cfg = preset(preset_name, vocab_size=vocab, context=max(seq, 1))
    torch.manual_seed(0)
    ours = Transformer(cfg)
    fields = {
        k: v for k, v in llama_config(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")
    }
    hf_cfg = LlamaConfig(**fields)
    hf_cfg._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(hf_cfg).float()
    state = {hf_name(k): v.clone() for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    hf.train()
    return cfg, ours, hf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model (after warmup)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-compile", action="store_true", help="run ours eager too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from llmlab.train.losses import cross_entropy
    from llmlab.train.mfu import measure_matmul_flops
    from llmlab.train.optim import make_optimizer

    cfg, ours, hf = build(args.preset, args.vocab, args.seq)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    y = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    tokens = x.numel()
    flops_per_token = cfg.flops_per_token(args.seq)

    def ours_loss(model, batch):
        return cross_entropy(model(batch[0]), batch[1])

    def hf_loss(model, batch):
        return cross_entropy(model(input_ids=batch[0]).logits, batch[1])

    ours_fn = ours_loss if args.no_compile else torch.compile(ours_loss)
    opt_ours, opt_hf = make_optimizer(ours, 1e-4, 0.1), make_optimizer(hf, 1e-4, 0.1)

    with torch.no_grad():
        lo, lh = float(ours_loss(ours, (x, y))), float(hf_loss(hf, (x, y)))
    print(f"parity: initial loss ours {lo:.6f} vs HF {lh:.6f} (|Δ| = {abs(lo - lh):.1e})")

    def step(fn, model, opt) -> float:
        t0 = time.perf_counter()
        loss = fn(model, (x, y))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    step(ours_fn, ours, opt_ours)  # compile + first step
    step(ours_fn, ours, opt_ours)
    print(f"warmup (compile) {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    step(hf_loss, hf, opt_hf)
    times_ours, times_hf, matmul = [], [], []
    for i in range(args.steps):  # interleaved, so background load hits all three alike
        times_ours.append(step(ours_fn, ours, opt_ours))
        times_hf.append(step(hf_loss, hf, opt_hf))
        matmul.append(measure_matmul_flops(1024, seconds=0.5))
        print(
            f"  round {i}: ours {times_ours[-1]:.3f}s  HF {times_hf[-1]:.3f}s  "
            f"matmul {matmul[-1] / 1e9:.1f} GFLOP/s",
            file=sys.stderr,
        )
    t_ours, t_hf = statistics.median(times_ours), statistics.median(times_hf)
    peak = statistics.median(matmul)
    tps_ours, tps_hf = tokens / t_ours, tokens / t_hf
    shape = (
        f"{args.preset}: {cfg.n_layer}x{cfg.d_model}, heads {cfg.n_head}/{cfg.n_kv_head}, vocab {args.vocab}, "
        f"batch {args.batch}x{args.seq}, fp32, {args.threads} threads"
    )
    print(f"shape: {shape}")
    print(f"ours{'' if args.no_compile else ' (compiled)'}: {tps_ours:,.0f} tokens/s")
    print(f"HF LlamaForCausalLM (eager, sdpa): {tps_hf:,.0f} tokens/s")
    print(f"ratio ours/HF: {tps_ours / tps_hf:.2f}x (target >= 1.10x)")
    print(f"fp32 matmul rate (1024^3, median over the same rounds): {peak / 1e9:,.1f} GFLOP/s")
    print(
        f"ours achieved: {flops_per_token * tps_ours / 1e9:,.1f} GFLOP/s = "
        f"{flops_per_token * tps_ours / peak:.1%} of the matmul rate (target >= 85% for small)"
    )
    print(
        f"HF achieved: {flops_per_token * tps_hf / 1e9:,.1f} GFLOP/s = {flops_per_token * tps_hf / peak:.1%} of the matmul rate"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
