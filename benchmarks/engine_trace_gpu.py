"""Serving a request trace on one GPU: benchmarks/engine_trace.py's trace, sides and report (imported
from it, not copied) on the gpt2-124m shape in bf16 on CUDA, plus the KV-cache memory our engine used.

The same 64 requests (prompts 16-192, outputs exactly 16-128, half greedy), but arriving at 400/s by
default (all 64 within ~0.2 s): a rate the engines keep up with would measure the arrivals, not the
engines, and a GPU decodes this shape many times faster than the CPU does `small`. Goal: ≥ 5× transformers' continuous batching tokens/s (and the other
targets of engine_trace.py). Memory: the peak of `torch.cuda.max_memory_allocated` during our timed
run above what was allocated before it (cache and activations), the engine's own cache size if it
exposes one (`engine.kv_cache_bytes`), and what the live rows' actual lengths need at the busiest step
(Σ (prompt + output so far) · 2 · layers · kv heads · head dim · 2 bytes).

    python benchmarks/engine_trace_gpu.py            # on a CUDA machine
    python benchmarks/engine_trace_gpu.py --dry-run  # CPU, tiny preset, fp32, 8 short requests: checks it runs
"""

from __future__ import annotations

import argparse
import sys

import torch
from engine_trace import QUICK, TraceSpec, build, make_trace, run_sides


class PeakMemory:
    """Context manager: CUDA memory allocated at its peak inside, above what was allocated on entry."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak = cuda, None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base


def print_memory(model, engine, run, probe: PeakMemory) -> None:
    cfg = model.cfg
    per_token = 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * next(model.parameters()).element_size()
    need = run.peak_live_tokens * per_token
    own = engine.kv_cache_bytes
    peak = f"{probe.peak / 1e6:.1f} MB" if probe.peak is not None else "n/a (no CUDA)"
    print(
        f"KV cache: the live rows needed at most {need / 1e6:.1f} MB ({run.peak_live_tokens} tokens x "
        f"{per_token} B); peak allocated during our run {peak} above the weights (activations included); "
        + (
            f"the engine's own cache {own / 1e6:.1f} MB ({own / need:.2f}x the need)"
            if own
            else "the engine exposes no kv_cache_bytes"
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, fp32, 8 short requests")
    ap.add_argument("--rate", type=float, default=400.0, help="arrivals per second (default 400)")
    ap.add_argument("--max-batch", type=int, default=32, help="concurrent rows, ours and HF CB (default 32)")
    ap.add_argument("--static-batch", type=int, default=16, help="HF generate batch size (default 16)")
    args = ap.parse_args()
    if args.dry_run:
        device, dtype, name, spec, max_batch, static_batch = "cpu", torch.float32, "tiny", QUICK, 4, 4
    elif not torch.cuda.is_available():
        print("no CUDA device; use --dry-run to check the script on CPU", file=sys.stderr)
        return 1
    else:
        device, dtype, name, spec = "cuda", torch.bfloat16, "gpt2-124m", TraceSpec(rate=args.rate)
        max_batch, static_batch = args.max_batch, args.static_batch
    model, hf = build(name, None, dtype, device)
    trace = make_trace(spec, model.cfg.vocab_size)
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
    print(
        f"engine trace on {where}: preset {name} ({model.num_params() / 1e6:.0f}M params), {dtype}, "
        f"{len(trace)} requests at {spec.rate:g}/s, {sum(r.max_new_tokens for r in trace)} output tokens, "
        f"max batch {max_batch}"
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    probe = PeakMemory(device == "cuda")
    # HF CB on GPU: its default tokens per forward pass (None), the same cache capacity as ours
    engine, run = run_sides(model, hf, trace, max_batch, static_batch, None, sync, around_ours=probe)
    print_memory(model, engine, run, probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
