"""Serving under load: `llmlab serve` vs `transformers serve --continuous-batching`, same model, same trace.

The trace is the engine benchmark's (engine_trace.py: 64 requests, prompts of 16-192 tokens, outputs of
16-128, every other one greedy, the rest T = 0.8, top-p 0.95; random weights of the `small` preset,
seed 0), sent as text through `/v1/completions` by the async `openai` client at a fixed concurrency
(a pool of C workers taking the requests in order). The prompts are decoded from ids outside the
special tokens and the tokenizer is trained here on seeded random words (the preset's 4096 entries),
so both servers tokenize the same text the same way (the HF export encodes as ours does).

Sides (each a separate process, `--threads` torch threads, the same dtype):
    engine       our Engine in this process, the same requests at the same concurrency: the bound the
                 server's HTTP, JSON and SSE overhead is measured against
    llmlab       `python -m llmlab serve --model DIR --max-batch C`
    transformers `transformers serve --continuous-batching --device cpu` on `llmlab export hf` of DIR
Ours stops only at max_tokens (`ignore_eos`); transformers may stop at an end token (rarely, with
random weights): tokens/s counts the tokens each side returned.

Printed per side: requests/s, output tokens/s, p50/p95 time to first token; then the ratios against
the targets: llmlab ≥ 85% of the engine's tokens/s, ≥ 4× transformers' tokens/s with p95 TTFT no worse.

    python benchmarks/serve_load.py                  # the trace above (minutes)
    python benchmarks/serve_load.py --quick          # 8 short requests, tiny preset: checks that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
from engine_trace import QUICK, TEMPERATURE, TOP_P, TraceSpec, make_trace, percentile

from llmlab.generate import Engine, SamplingParams
from llmlab.model import Transformer, preset
from llmlab.model.hf import export_hf
from llmlab.model.load import save_model_dir
from llmlab.tokenizer import Tokenizer

TARGET_VS_ENGINE, TARGET_VS_HF = 0.85, 4.0


@dataclass
class Result:
    name: str
    wall: float = math.nan
    tokens: int = 0
    done: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)

    def row(self) -> str:
        rps, tps = self.done / self.wall, self.tokens / self.wall
        p50, p95 = percentile(self.ttft, 0.5), percentile(self.ttft, 0.95)
        return f"{self.name:<14}{rps:>10.2f}{tps:>12.1f}{p50:>10.3f}s{p95:>10.3f}s{self.errors:>8}"


def random_words_tokenizer(vocab_size: int) -> Tokenizer:
    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(3000)
    ]
    text = " ".join(rng.choice(words) for _ in range(60_000))
    return Tokenizer.train([text], vocab_size, show_progress=False)


def text_trace(spec: TraceSpec, tok) -> list[dict]:
    """The engine trace's lengths and settings, prompts as text from ids below the special tokens."""
    first_special = min(tok.special_tokens.values())
    out = []
    for r in make_trace(spec, first_special):
        body = {"prompt": tok.decode(r.prompt), "max_tokens": r.max_new_tokens}
        body.update(
            {"temperature": 0} if r.greedy else {"temperature": TEMPERATURE, "top_p": TOP_P, "seed": r.index}
        )
        out.append(body)
    return out


# ---- the engine alone -----------------------------------------------------------------------------


def run_engine(model, tok, trace: list[dict], concurrency: int, dtype: torch.dtype) -> Result:
    engine = Engine(
        model, tok, max_batch=concurrency, max_len=model.cfg.context, stop_token_ids=[], dtype=dtype
    )
    for b in trace[:2]:  # warm up: first-call costs stay out of the timing, as for the servers
        engine.generate_ids([tok.encode(b["prompt"])], SamplingParams(max_new_tokens=2, temperature=0))
    res, pending, live = Result("engine"), deque(trace), {}
    t0 = time.perf_counter()
    while pending or live:
        while pending and len(live) < concurrency:
            b = pending.popleft()
            params = SamplingParams(
                max_new_tokens=b["max_tokens"],
                temperature=b["temperature"],
                top_p=b.get("top_p", 1.0),
                seed=b.get("seed"),
            )
            live[engine.add_request(tok.encode(b["prompt"]), params)] = time.perf_counter()
        for ev in engine.step():
            if ev.token_id is not None:
                res.tokens += 1
                if live.get(ev.request_id, 0) > 0:
                    res.ttft.append(time.perf_counter() - live[ev.request_id])
                    live[ev.request_id] = -1.0
            if ev.finished:
                live.pop(ev.request_id, None)
                res.done += 1
    res.wall = time.perf_counter() - t0
    return res


# ---- a server ------------------------------------------------------------------------------------


async def run_clients(
    base_url: str, model: str, trace: list[dict], concurrency: int, extra: dict, name: str
) -> Result:
    import openai

    res, queue = Result(name), deque(trace)
    async with openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600
    ) as client:

        async def worker():
            while queue:
                body = queue.popleft()
                sent, first = time.perf_counter(), None
                try:
                    stream = await client.completions.create(
                        model=model,
                        stream=True,
                        stream_options={"include_usage": True},
                        extra_body=extra,
                        **body,
                    )
                    chunks = 0
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].text:
                            first = first or time.perf_counter()
                            chunks += 1
                        if getattr(chunk, "usage", None):
                            chunks = chunk.usage.completion_tokens  # exact, where the server reports it
                    res.tokens += chunks
                except openai.APIError as e:
                    res.errors += 1
                    print(f"  {name}: {type(e).__name__}: {e}"[:200])
                    continue
                res.done += 1
                if first is not None:
                    res.ttft.append(first - sent)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        res.wall = time.perf_counter() - t0
    return res


def start(cmd: list[str], url: str, env: dict, what: str, wait: float = 600) -> subprocess.Popen | None:
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (a file, not a pipe: a chatty server never blocks)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            print(f"{what} exited: {log.read()[-800:]}")
            return None
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    print(f"{what} did not become healthy in {wait:.0f} s")
    return None


def serve_side(name, cmd, url, env, model, trace, concurrency, extra) -> Result | None:
    proc = start(cmd, url, env, name)
    if proc is None:
        return None
    try:
        asyncio.run(run_clients(url, model, trace[:2], 2, extra, name))  # warm up: first-call costs
        return asyncio.run(run_clients(url, model, trace, concurrency, extra, name))
    finally:
        proc.terminate()
        proc.wait(60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 short requests, tiny preset: checks that it runs")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--concurrency", type=int, default=16, help="clients in flight, and our max batch")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads on every side")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers serve")
    args = ap.parse_args()
    spec, name, concurrency = TraceSpec(), args.preset, args.concurrency
    if args.quick:
        spec, name, concurrency = QUICK, "tiny", 4
    torch.set_num_threads(args.threads)
    tok = random_words_tokenizer(args.vocab)
    torch.manual_seed(0)
    model = Transformer(preset(name, vocab_size=tok.vocab_size)).eval()
    trace = text_trace(spec, tok)
    print(
        f"serve load (cpu, {args.threads} threads, {args.dtype}): preset {name} ({model.num_params() / 1e6:.1f}M "
        f"params), {len(trace)} requests at concurrency {concurrency}, outputs {spec.output[0]}-{spec.output[1]}"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    results = [run_engine(model, tok, trace, concurrency, getattr(torch, args.dtype))]
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir = save_model_dir(Path(tmp) / "bench", model, tok)
        port = free_port()
        cmd = [sys.executable, "-m", "llmlab", "serve", "--model", str(ours_dir), "--port", str(port)]
        cmd += ["--max-batch", str(concurrency), "--device", "cpu", "--dtype", args.dtype]
        results.append(
            serve_side(
                "llmlab",
                cmd,
                f"http://127.0.0.1:{port}",
                env,
                "bench",
                trace,
                concurrency,
                {"ignore_eos": True},
            )
        )
        if not args.no_hf:
            hf_dir = export_hf(model, tok, Path(tmp) / "bench-hf")
            port = free_port()
            exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
            cmd = [exe, "serve", "--continuous-batching", "--device", "cpu", "--dtype", args.dtype]
            cmd += ["--host", "127.0.0.1", "--port", str(port), str(hf_dir)]
            results.append(
                serve_side(
                    "transformers", cmd, f"http://127.0.0.1:{port}", env, str(hf_dir), trace, concurrency, {}
                )
            )
    report([r for r in results if r is not None])


def report(results: list[Result]) -> None:
    print(f"{'side':<14}{'req/s':>10}{'out tok/s':>12}{'TTFT p50':>11}{'TTFT p95':>11}{'errors':>8}")
    for r in results:
        print(r.row())
    by = {r.name: r for r in results}
    ours, engine, hf = by.get("llmlab"), by["engine"], by.get("transformers")
    if ours is None:
        print("llmlab serve did not run")
        return
    ratio = (ours.tokens / ours.wall) / (engine.tokens / engine.wall)
    print(
        f"llmlab / engine tokens/s: {ratio:.2f} (target >= {TARGET_VS_ENGINE:.2f}: {'PASS' if ratio >= TARGET_VS_ENGINE else 'FAIL'})"
    )
    if hf is None:
        print("llmlab / transformers: n/a (transformers serve did not run)")
        return
    ratio = (ours.tokens / ours.wall) / (hf.tokens / hf.wall)
    ttft_ok = percentile(ours.ttft, 0.95) <= percentile(hf.ttft, 0.95)
    print(
        f"llmlab / transformers tokens/s: {ratio:.2f}x (target >= {TARGET_VS_HF:g}x: {'PASS' if ratio >= TARGET_VS_HF else 'FAIL'}); "
        f"p95 TTFT no worse: {'PASS' if ttft_ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
