"""Serving a request trace on CPU: our continuous-batching engine vs transformers' continuous batching
and HF `generate` in static batches, on the same weights, in one process.

The trace (fixed, seeded): 64 requests with Poisson arrivals at 16 requests/s (the 64 arrive over
about 4 s), prompts of 16-192 random token ids, outputs of exactly 16-128 tokens (each request's
`max_new_tokens`; no stop token on any side, so every side generates the same number of tokens),
every other request greedy, the rest sampled at T = 0.8, top-p 0.95. Model: the `small` preset,
random weights (seed 0), fp32 (or --dtype bfloat16 on both sides), 2 threads. Time is wall time: a
request is submitted to a side only once its arrival time has passed.

The rate is meant to keep ~16-32 requests in flight for `small` on a 2-core CPU. By Little's law, in
flight = rate × time in the system; at an estimated ~1,000 tokens/s at batch 32 (a guess from
decode.py's shape, not yet measured on a quiet machine) a 72-token mean output keeps a request ~2 s
in the engine, so 16/s fills the 32 rows while arrivals last. The script prints the mean and maximum
running width it saw: check them, and change --rate if they are off.

Per side: output tokens/s (all output tokens / time from the first arrival to the last token), time
to first token (first token − arrival) p50/p95, time per output token ((last − first) / (n − 1)) p50.

    ours         Engine(model, None, max_batch=32): the loop calls add_request for every request whose
                 arrival ≤ now, then step(); the events give each token's time, the engine its running
                 width per decode step.
    HF CB        transformers' continuous batching (init_continuous_batching, SDPA attention with its
                 paged cache, 32 requests per batch, a cache of 32 full-length requests), requests added
                 from this thread at their arrival times while its generation thread runs. Greedy rows
                 are sampled with a per-request top_k=1 (its sampling switch is global).
    HF static    HF generate on arrival-ordered batches of up to 16 requests, left-padded; a batch
                 starts when its last request has arrived and the previous batch finished; greedy rows
                 of a sampled batch keep only their argmax (a logits processor). A streamer times steps.
                 Both anchors are in benchmarks/engine_trace_hf.py.

The bound: every weight matrix through F.linear once at the step's running width (measured here, per
width), summed over our decode steps: the matmuls alone, no attention, no Python. Targets: ≥ 5× HF
CB tokens/s, ≥ 50% of the bound (over our busy time), p50 TTFT no worse than the better HF side, greedy
outputs identical to each request run alone through our engine.

    python benchmarks/engine_trace.py                    # the trace above, fp32
    python benchmarks/engine_trace.py --dtype bfloat16   # the same trace in bf16 on both sides
    python benchmarks/engine_trace.py --quick            # 8 short requests, tiny preset: checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from engine_trace_hf import Timed, load_hf, run_hf_cb, run_hf_static

from llmlab.generate import Engine, SamplingParams
from llmlab.model import Transformer, preset

TEMPERATURE, TOP_P = 0.8, 0.95  # the sampled half of the trace
SAMPLING = dict(temperature=TEMPERATURE, top_p=TOP_P)
TARGET_VS_CB, TARGET_BOUND = 5.0, 0.5


@dataclass
class Request:
    index: int
    arrival: float  # seconds after the trace starts
    prompt: list[int]
    max_new_tokens: int
    greedy: bool


@dataclass
class Record:
    """What one side did with one request; times in seconds after the trace started."""

    req: Request
    tokens: list[int] = field(default_factory=list)
    first: float = math.nan
    last: float = math.nan


@dataclass
class TraceSpec:
    requests: int = 64
    rate: float = 16.0  # requests per second
    prompt: tuple[int, int] = (16, 192)
    output: tuple[int, int] = (16, 128)
    seed: int = 0


QUICK = TraceSpec(requests=8, rate=50.0, prompt=(8, 32), output=(4, 16))


def make_trace(spec: TraceSpec, vocab_size: int) -> list[Request]:
    """Poisson arrivals (exponential gaps, the first at t = 0), uniform lengths, even indices greedy."""
    rng = random.Random(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    t, trace = 0.0, []
    for i in range(spec.requests):
        n = rng.randint(*spec.prompt)
        prompt = torch.randint(0, vocab_size, (n,), generator=gen).tolist()
        trace.append(Request(i, t, prompt, rng.randint(*spec.output), greedy=i % 2 == 0))
        t += rng.expovariate(spec.rate)
    return trace


def ours_params(r: Request) -> SamplingParams:
    """No stop tokens: every request generates exactly max_new_tokens."""
    if r.greedy:
        return SamplingParams(temperature=0, max_new_tokens=r.max_new_tokens, stop_token_ids=[])
    return SamplingParams(
        temperature=TEMPERATURE, top_p=TOP_P, seed=r.index, max_new_tokens=r.max_new_tokens, stop_token_ids=[]
    )


# ---- ours -------------------------------------------------------------------------------------------


def make_engine(model, max_batch: int, compile: bool = False) -> Engine:
    return Engine(model, None, max_batch=max_batch, stop_token_ids=[], compile=compile)


@dataclass
class OursRun:
    records: list[Record]
    widths: list[int]  # rows in each decode step (the engine's own record)
    busy: float  # seconds spent in step()
    peak_live_tokens: int  # max over steps of the summed lengths (prompt + output so far) of live rows


def run_ours(engine, trace: list[Request]) -> OursRun:
    """Submit each request once its arrival time has passed, step while anything is unfinished."""
    pending = deque(sorted(trace, key=lambda r: r.arrival))
    records, by_id = [Record(r) for r in trace], {}
    busy, peak, steps_before = 0.0, 0, len(engine.step_widths)
    t0 = time.perf_counter()
    while pending or engine.has_unfinished():
        now = time.perf_counter() - t0
        while pending and pending[0].arrival <= now:
            r = pending.popleft()
            by_id[engine.add_request(r.prompt, ours_params(r), n=1)] = records[r.index]
        if not engine.has_unfinished():
            time.sleep(max(0.0, pending[0].arrival - now))  # idle until the next arrival
            continue
        start = time.perf_counter()
        events = engine.step()
        end = time.perf_counter()
        busy, t = busy + end - start, end - t0
        live = {}
        for ev in events:
            if ev.token_id is None or ev.forced:
                continue
            rec = by_id[ev.request_id]
            if not rec.tokens:
                rec.first = t
            rec.tokens.append(ev.token_id)
            rec.last = t
            live[id(rec)] = len(rec.req.prompt) + len(rec.tokens)
        peak = max(peak, sum(live.values()))
    widths = list(engine.step_widths[steps_before:])
    return OursRun(records, widths, busy, peak)


def run_alone(engine, r: Request) -> list[int]:
    """One request with nothing else in the engine: its output tokens."""
    rid, out = engine.add_request(r.prompt, ours_params(r), n=1), []
    while engine.has_unfinished():
        out += [ev.token_id for ev in engine.step() if ev.request_id == rid and ev.token_id is not None]
    return out


def warm_up(engine, trace: list[Request]) -> None:
    """Two short requests, so first-call costs (allocations) stay out of the trace. A compiled engine
    also gets max_batch requests at once that finish one step apart, so that the running width passes
    through every batch-size bucket. Steps are keyed by (bucket, the sampling processors its rows use),
    so a bucket whose rows later are all greedy (or all sampled) may still compile once in the trace:
    check the busy time against a second run. Not yet run on a quiet machine."""
    for r in trace[:2]:
        run_alone(engine, Request(r.index, 0.0, r.prompt[:8], 4, r.greedy))
    if engine.compile:
        for i in range(engine.max_batch):
            r = trace[i % len(trace)]
            engine.add_request(r.prompt[:8], ours_params(Request(i, 0.0, r.prompt, 2 + i, r.greedy)), n=1)
        while engine.has_unfinished():
            engine.step()


# ---- the HF anchors ---------------------------------------------------------------------------------


# ---- the bound and the report -----------------------------------------------------------------------


def matmul_step_time(model: Transformer, width: int, sync=lambda: None, reps: int = 5) -> float:
    """Seconds for every weight matrix of the model through F.linear once at batch `width`, best of
    `reps` (the tied LM head counts once, as the embedding lookup reads only `width` rows)."""
    mats = {m.weight.data_ptr(): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    xs = {w.shape[1]: torch.ones(width, w.shape[1], dtype=w.dtype, device=w.device) for w in mats.values()}
    best = math.inf
    with torch.inference_mode():
        for _ in range(reps + 1):
            sync()
            t = time.perf_counter()
            for w in mats.values():
                torch.nn.functional.linear(xs[w.shape[1]], w)
            sync()
            best = min(best, time.perf_counter() - t)
    return best


def bound_time(model: Transformer, widths: list[int], sync=lambda: None) -> float:
    per_width = {w: matmul_step_time(model, w, sync) for w in set(widths)}
    return sum(per_width[w] for w in widths)


def read_bandwidth(device, sync=lambda: None, mb: int = 256) -> float:
    """Bytes/s of one pass reading a large tensor (what a decode step's KV reads run at)."""
    x = torch.ones(mb * 2**18, device=device)
    best = math.inf
    for _ in range(4):
        sync()
        t = time.perf_counter()
        x.sum()
        sync()
        best = min(best, time.perf_counter() - t)
    return x.numel() * x.element_size() / best


def work_floor(model: Transformer, trace: list[Request], bound: float, sync=lambda: None) -> dict:
    """What any engine must do for this trace, besides the decode matmuls (`bound`): every prompt token
    through every weight once (F.linear at the prompt's width), and each decode step reading exactly
    its row's keys and values (no padding to the longest row) at the machine's read bandwidth."""
    prefill = sum(matmul_step_time(model, len(r.prompt), sync, reps=2) for r in trace)
    cfg = model.cfg
    per_slot = cfg.n_layer * 2 * cfg.n_kv_head * cfg.head_dim * next(model.parameters()).element_size()
    slots = sum(len(r.prompt) + j for r in trace for j in range(1, r.max_new_tokens))
    kv = slots * per_slot / read_bandwidth(next(model.parameters()).device, sync)
    return {"decode": bound, "prefill": prefill, "kv": kv, "total": bound + prefill + kv}


def as_records(trace: list[Request], timed: Timed) -> list[Record]:
    return [Record(r, *timed[r.index]) if r.index in timed else Record(r) for r in trace]


def percentile(xs: list[float], q: float) -> float:
    s = sorted(x for x in xs if not math.isnan(x))
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else math.nan


@dataclass
class Summary:
    name: str
    tok_s: float
    ttft: list[float]
    tpot: list[float]
    exact: int
    n: int


def summarize(name: str, records: list[Record]) -> Summary:
    done = [r for r in records if r.tokens and not math.isnan(r.last)]
    end = max((r.last for r in done), default=math.nan)
    tokens = sum(len(r.tokens) for r in done)
    ttft = [r.first - r.req.arrival for r in done]
    tpot = [(r.last - r.first) / (len(r.tokens) - 1) for r in done if len(r.tokens) > 1]
    exact = sum(len(r.tokens) == r.req.max_new_tokens for r in records)
    return Summary(name, tokens / end if done else math.nan, ttft, tpot, exact, len(records))


def print_table(rows: list[Summary]) -> None:
    print(f"{'side':<28}{'tok/s':>10}{'TTFT p50':>11}{'TTFT p95':>11}{'TPOT p50':>11}  exact lengths")
    for s in rows:
        print(
            f"{s.name:<28}{s.tok_s:>10.1f}{percentile(s.ttft, 0.5):>10.3f}s{percentile(s.ttft, 0.95):>10.3f}s"
            f"{percentile(s.tpot, 0.5) * 1e3:>9.1f}ms  {s.exact}/{s.n}"
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def greedy_same(a: list[Record], b: list[Record]) -> tuple[int, int]:
    pairs = [(x, y) for x, y in zip(a, b) if x.req.greedy]
    return sum(x.tokens == y.tokens for x, y in pairs), len(pairs)


def print_targets(
    ours: Summary, anchors: dict[str, Summary], run: OursRun, bound: float, alone: tuple
) -> None:
    cb = anchors.get("HF continuous batching")
    for name, s in anchors.items():
        ratio = ours.tok_s / s.tok_s
        goal = f" (target >= {TARGET_VS_CB:g}x: {verdict(ratio >= TARGET_VS_CB)})" if s is cb else ""
        print(f"ours / {name}: {ratio:.2f}x tokens/s{goal}")
    if cb is None:
        print(f"ours / HF continuous batching: n/a (it did not run; target >= {TARGET_VS_CB:g}x: FAIL)")
    tokens = sum(len(r.tokens) for r in run.records)
    frac = bound / run.busy
    print(
        f"matmul bound: {tokens / bound:.1f} tok/s (every weight matrix through F.linear once at the running "
        f"width, summed over {len(run.widths)} decode steps: {bound:.2f} s); ours = {frac:.0%} of it over its "
        f"busy time {run.busy:.2f} s (target >= {TARGET_BOUND:.0%}: {verdict(frac >= TARGET_BOUND)})"
    )
    best = min((percentile(s.ttft, 0.5) for s in anchors.values()), default=math.nan)
    mine = percentile(ours.ttft, 0.5)
    print(
        f"p50 TTFT: ours {mine:.3f} s, best HF side {best:.3f} s (target no worse: {verdict(mine <= best)})"
    )
    print(f"greedy identical to alone: {alone[0]}/{alone[1]} (target all: {verdict(alone[0] == alone[1])})")


def print_floor(floor: dict, busy: float) -> None:
    print(
        f"work floor: decode matmuls {floor['decode']:.2f} s + prefill matmuls {floor['prefill']:.2f} s + KV "
        f"reads at exact lengths {floor['kv']:.2f} s = {floor['total']:.2f} s; ours = {floor['total'] / busy:.0%} "
        f"of it; an engine at the floor would be at {floor['decode'] / floor['total']:.0%} of the matmul bound"
    )


def build(preset_name: str, vocab: int | None, dtype: torch.dtype, device: str) -> tuple[Transformer, object]:
    """Our model (random weights, seed 0) and the same weights as a HF Llama, both in `dtype`."""
    torch.manual_seed(0)
    model = Transformer(preset(preset_name, vocab_size=vocab))
    hf = load_hf(model, dtype, device)
    return model.to(device=device, dtype=dtype).eval(), hf


def run_sides(
    model,
    hf,
    trace,
    max_batch: int,
    static_batch: int,
    cb_batch_tokens: int | None = 512,
    sync=lambda: None,
    around_ours=None,
    compile: bool = False,
):
    """Every side on the trace, the bound, the comparisons; prints the report. `around_ours`: a context
    manager entered for our timed run only (the GPU script measures memory with it). Returns (engine, our run)."""
    engine = make_engine(model, max_batch, compile)
    print(f"ours: Engine(max_batch={max_batch}, compile={compile}), the continuous-batching scheduler")
    warm_up(engine, trace)
    with around_ours or contextlib.nullcontext():
        run = run_ours(engine, trace)
    anchors: dict[str, list[Record]] = {}
    try:
        anchors["HF continuous batching"] = as_records(
            trace, run_hf_cb(hf, trace, max_batch, SAMPLING, cb_batch_tokens)
        )
    except Exception as e:  # report it and go on with the other anchor
        print(f"HF continuous batching failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
    static = run_hf_static(hf, trace, static_batch, SAMPLING)
    anchors[f"HF generate, static B={static_batch}"] = as_records(trace, static)
    alone_records = [Record(r, run_alone(engine, r)) if r.greedy else Record(r) for r in trace]
    bound = bound_time(model, run.widths, sync)

    ours = summarize("ours", run.records)
    sums = {name: summarize(name, recs) for name, recs in anchors.items()}
    print_table([ours, *sums.values()])
    mean_w = sum(run.widths) / max(1, len(run.widths))
    print(
        f"ours running width: mean {mean_w:.1f}, max {max(run.widths, default=0)} over {len(run.widths)} steps"
    )
    print_targets(ours, sums, run, bound, greedy_same(run.records, alone_records))
    print_floor(work_floor(model, trace, bound, sync), run.busy)
    same = [f"{name} {'/'.join(map(str, greedy_same(run.records, recs)))}" for name, recs in anchors.items()]
    print("greedy identical to " + "; ".join(same) + " (informational: kernels differ)")
    return engine, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="8 short requests on the tiny preset: checks that it runs"
    )
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="both sides")
    ap.add_argument("--rate", type=float, default=None, help="arrivals per second (default 16)")
    ap.add_argument("--preset", default="small", help="model shape (the targets are for small)")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size (default 4096, the run's)")
    ap.add_argument("--max-batch", type=int, default=32, help="concurrent rows, ours and HF CB (default 32)")
    ap.add_argument("--static-batch", type=int, default=16, help="HF generate batch size (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every side (default 2)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="ours with Engine(compile=True): every batch-size bucket compiled in the warm-up (minutes)",
    )
    ap.add_argument(
        "--ours-only", action="store_true", help="skip the anchors (quick iterations on the engine)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec, name, max_batch, static_batch = TraceSpec(), args.preset, args.max_batch, args.static_batch
    if args.quick:
        spec, name, max_batch, static_batch = QUICK, "tiny", 4, 4
    if args.rate:
        spec = dataclasses.replace(spec, rate=args.rate)
    dtype = getattr(torch, args.dtype)
    model, hf = build(name, args.vocab, dtype, "cpu")
    trace = make_trace(spec, model.cfg.vocab_size)
    print(
        f"engine trace (cpu, {torch.get_num_threads()} threads, {args.dtype}): preset {name} "
        f"({model.num_params() / 1e6:.1f}M params), {len(trace)} requests, Poisson {spec.rate:g}/s "
        f"(arrivals over {trace[-1].arrival:.1f} s), prompts {spec.prompt[0]}-{spec.prompt[1]}, outputs "
        f"{spec.output[0]}-{spec.output[1]} ({sum(r.max_new_tokens for r in trace)} tokens), "
        f"{sum(r.greedy for r in trace)} greedy + rest T={TEMPERATURE} top-p {TOP_P}, max batch {max_batch}"
    )
    if args.ours_only:
        run_ours_only(model, trace, max_batch, args.compile)
    else:
        run_sides(model, hf, trace, max_batch, static_batch, compile=args.compile)


def run_ours_only(model, trace, max_batch: int, compile: bool = False) -> None:
    engine = make_engine(model, max_batch, compile)
    warm_up(engine, trace)
    run = run_ours(engine, trace)
    bound = bound_time(model, run.widths)
    ours = summarize("ours", run.records)
    print_table([ours])
    print(
        f"busy {run.busy:.2f} s, decode steps {len(run.widths)}, bound {bound:.2f} s "
        f"= {bound / run.busy:.0%} of busy time"
    )
    print_floor(work_floor(model, trace, bound), run.busy)


if __name__ == "__main__":
    main()
