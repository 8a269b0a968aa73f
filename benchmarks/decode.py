"""Decoding speed on CPU: our engine vs HF `generate` on the same weights, in one process.

The `small` preset shape (random weights, exported with `llmlab.model.hf.export_hf` and loaded by
transformers), greedy, 128 new tokens from a 32-token prompt, batch 1 and batch 8. Runs alternate
ours / HF and keep each side's best time, so a busy machine hurts both alike.

"ours" is `Engine(model, compile=True)`: the decode step compiled by inductor with its C++ GEMM
template on frozen weights (see `llmlab.generate.compiled`); its one-time compile is
excluded, as HF's warm-up is. "ours eager" (the default `Engine(model)`) is printed alongside.

Also prints the memory-bandwidth bound: at batch B every decode step must stream all weights and the
KV cache once, so tokens/s ≤ B · bandwidth / (weight bytes + cache bytes per step), with the bandwidth
measured here by a large tensor copy (bytes read + written per second), and the tighter bound of
streaming every weight matrix through eager F.linear once (what those matmuls alone cost here).

    python benchmarks/decode.py            # targets: ≥ 1.5× HF at batch 1, ≥ 2× at batch 8
    python benchmarks/decode.py --quick    # a few tokens, to check that it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from llmlab.generate import Engine, SamplingParams
from llmlab.model import Transformer, preset
from llmlab.model.hf import export_hf

TARGETS = {1: 1.5, 8: 2.0}


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target}x: {'PASS' if ratio >= target else 'FAIL'}"


def copy_bandwidth(mb: int = 256, reps: int = 5) -> float:
    """Bytes per second moved by dst.copy_(src) (read + write), best of `reps`."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def linear_stream_rate(model: Transformer, batch: int, reps: int = 5) -> float:
    """Weight bytes per second that F.linear reads when it streams every matrix of the model once
    at this batch size (the matmuls of a decode step and nothing else), best of `reps`. On CPUs
    this is often far below the copy bandwidth, and it is the ceiling for any decoder whose matmuls
    go through eager F.linear (HF's, and our eager engine). The compiled engine's GEMM template on
    prepacked weights is not held to it."""
    mats = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = sum(w.numel() * 4 for w in mats)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):
            t = time.perf_counter()
            for w in mats:
                torch.nn.functional.linear(torch.ones(batch, w.shape[1]), w)
            best = min(best, time.perf_counter() - t)
    return total / best


def bytes_per_step(model: Transformer, batch: int, prompt_len: int, new: int) -> tuple[float, float]:
    """(weight bytes, mean KV-cache bytes) read by one decode step. The embedding table is read only
    for B rows, except when it doubles as the LM head (tied), where it is read whole."""
    cfg = model.cfg
    weights = sum(p.numel() for p in model.parameters()) * 4
    if not cfg.tie_embeddings:
        weights -= cfg.vocab_size * cfg.d_model * 4
    mean_len = prompt_len + new / 2
    cache = 2 * cfg.n_layer * batch * cfg.n_kv_head * mean_len * cfg.head_dim * 4
    return weights, cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat: checks that it runs")
    ap.add_argument("--new", type=int, default=128, help="new tokens (default 128)")
    ap.add_argument("--reps", type=int, default=3, help="timed repeats per side (best is kept)")
    ap.add_argument("--preset", default="small", help="model shape (the targets are for small)")
    ap.add_argument("--eager", action="store_true", help="time the eager engine as 'ours' (no compile)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads for both sides (default: torch's)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    new, reps = (8, 1) if args.quick else (args.new, args.reps)

    import transformers

    torch.manual_seed(0)
    model = Transformer(preset(args.preset)).eval()
    with tempfile.TemporaryDirectory() as d:
        export_hf(model, None, d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, local_files_only=True).eval()
    engine = Engine(model, stop_token_ids=[], compile=not args.eager)
    eager_engine = Engine(model, stop_token_ids=[])
    prompt_len = 32
    bw = copy_bandwidth()
    print(
        f"decode benchmark (cpu, {torch.get_num_threads()} threads): preset {args.preset} "
        f"({model.num_params() / 1e6:.1f}M params), greedy, {new} new tokens, prompt {prompt_len}; "
        f"copy bandwidth {bw / 1e9:.1f} GB/s"
    )

    for batch in (1, 8):
        prompts = torch.randint(
            0, model.cfg.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(1)
        )
        params = SamplingParams(temperature=0, max_new_tokens=new)

        def ours(prompts=prompts, params=params, engine=engine) -> list[list[int]]:
            return [c.token_ids for c in engine.generate_ids(prompts.tolist(), params)]

        def theirs(prompts=prompts) -> list[list[int]]:
            with torch.inference_mode():
                out = hf.generate(
                    prompts,
                    attention_mask=torch.ones_like(prompts),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                )
            return out[:, prompt_len:].tolist()

        t = time.perf_counter()
        ours()  # warm up both; the first call of the compiled engine compiles
        t_compile = time.perf_counter() - t
        theirs(), ours(engine=eager_engine)
        t_ours = t_hf = t_eager = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a = ours()
            t_ours = min(t_ours, time.perf_counter() - t)
            t = time.perf_counter()
            b = theirs()
            t_hf = min(t_hf, time.perf_counter() - t)
            t = time.perf_counter()
            ours(engine=eager_engine)
            t_eager = min(t_eager, time.perf_counter() - t)
        same = sum(x == y for x, y in zip(a, b))
        tps_ours, tps_hf = batch * new / t_ours, batch * new / t_hf
        w, c = bytes_per_step(model, batch, prompt_len, new)
        bound = batch * bw / (w + c)
        ratio = tps_ours / tps_hf
        print(
            f"batch {batch}: ours {tps_ours:.1f} tok/s, HF generate {tps_hf:.1f} tok/s, ratio {ratio:.2f}x "
            f"({verdict(ratio, TARGETS[batch]) if args.preset == 'small' else 'targets are for small'}); "
            f"identical outputs {same}/{batch}"
        )
        print(
            f"batch {batch}: ours eager {batch * new / t_eager:.1f} tok/s ({t_hf / t_eager:.2f}x HF); "
            f"first call of ours (the compile, once per process and batch size) {t_compile:.1f} s"
        )
        lin = batch * linear_stream_rate(model, batch) / (w + c)
        print(
            f"batch {batch}: eager F.linear bound {lin:.1f} tok/s (every weight through F.linear once per "
            f"step, measured now); ours = {tps_ours / lin:.0%} of it, HF = {tps_hf / lin:.0%}"
        )
        print(
            f"batch {batch}: bandwidth bound {bound:.1f} tok/s ({w / 1e6:.0f} MB weights + {c / 1e6:.1f} MB "
            f"cache per step at {bw / 1e9:.1f} GB/s); ours = {tps_ours / bound:.0%} of it, "
            f"HF = {tps_hf / bound:.0%}"
        )


if __name__ == "__main__":
    main()
