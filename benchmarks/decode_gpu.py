"""Decoding speed on one GPU: our engine (static KV cache, the whole decode step, sampling included,
replayed as one CUDA graph) vs HF `generate` on the same exported Llama weights, in one process.

gpt2-124m shape (random weights), bf16, 256 new tokens from a 32-token prompt, greedy, batch 1 and 16.
HF runs twice: its default (dynamic cache) and `cache_implementation="static"`.
Targets: ≥ 2× HF static at batch 1, ≥ 1.5× at batch 16.

    python benchmarks/decode_gpu.py            # on a CUDA machine
    python benchmarks/decode_gpu.py --dry-run  # CPU, tiny shapes, a few tokens: checks that the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from llmlab.generate import Engine, SamplingParams
from llmlab.model import Transformer, preset
from llmlab.model.hf import export_hf

TARGETS = {1: 2.0, 16: 1.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, fp32, 8 tokens, batch 1 and 2")
    ap.add_argument("--new", type=int, default=256, help="new tokens (default 256)")
    ap.add_argument("--reps", type=int, default=3, help="timed repeats (best is kept)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile our step before capture")
    args = ap.parse_args()

    import transformers

    if args.dry_run:
        device, dtype, name, new, batches, reps = "cpu", torch.float32, "tiny", 8, (1, 2), 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device; use --dry-run to check the script on CPU")
        device, dtype, name, new, batches, reps = (
            "cuda",
            torch.bfloat16,
            "gpt2-124m",
            args.new,
            (1, 16),
            args.reps,
        )

    torch.manual_seed(0)
    model = Transformer(preset(name))
    with tempfile.TemporaryDirectory() as d:
        export_hf(model, None, d)
        hf = (
            transformers.AutoModelForCausalLM.from_pretrained(d, local_files_only=True, dtype=dtype)
            .to(device)
            .eval()
        )
    model = model.to(device=device, dtype=dtype).eval()
    engine = Engine(model, stop_token_ids=[], static=True, compile=args.compile)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
    print(
        f"decode_gpu benchmark on {dev_name}: preset {name} ({model.num_params() / 1e6:.0f}M params), {dtype}, "
        f"greedy, {new} new tokens, prompt 32; ours = static cache + "
        + ("one CUDA graph per step" if device == "cuda" else "the same static step run eagerly (dry run)")
        + (" + torch.compile" if args.compile else "")
    )

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        fn()  # warm-up: graph capture / compilation
        best = float("inf")
        for _ in range(reps):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return best

    for batch in batches:
        prompts = torch.randint(
            0, model.cfg.vocab_size, (batch, 32), generator=torch.Generator().manual_seed(1)
        )
        params = SamplingParams(temperature=0, max_new_tokens=new)
        p_dev = prompts.to(device)

        def hf_run(p_dev=p_dev, **kw):
            with torch.inference_mode():
                return hf.generate(
                    p_dev,
                    attention_mask=torch.ones_like(p_dev),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                    **kw,
                )

        ids = prompts.tolist()
        t_ours = timed(lambda ids=ids, params=params: engine.generate_ids(ids, params))
        t_dyn = timed(hf_run)
        t_static = timed(lambda hf_run=hf_run: hf_run(cache_implementation="static"))
        ours, dyn, static = (batch * new / t for t in (t_ours, t_dyn, t_static))
        target = TARGETS.get(batch, 2.0 if batch == 1 else 1.5)
        verdict = "PASS" if ours / static >= target else "FAIL"
        print(
            f"batch {batch}: ours {ours:.0f} tok/s, HF dynamic {dyn:.0f} tok/s ({ours / dyn:.2f}x), "
            f"HF static {static:.0f} tok/s ({ours / static:.2f}x; target >= {target}x: {verdict})"
        )


if __name__ == "__main__":
    main()
