"""The HF anchors of benchmarks/engine_trace.py (a helper module; it measures nothing on its own).

Each anchor takes the trace (objects with .index, .arrival, .prompt, .max_new_tokens, .greedy; arrival
in seconds after the trace starts) and returns, per request index, (output tokens, time of the first
token, time of the last token), times in seconds after the trace started. Requests reach an anchor only
once their arrival time has passed.
"""

from __future__ import annotations

import math
import tempfile
import time

import torch

from llmlab.model.hf import export_hf

Timed = dict[int, tuple[list[int], float, float]]


def load_hf(model, dtype: torch.dtype, device: str, attn: str = "sdpa"):
    """Our model exported as a HF Llama directory and loaded by transformers, in `dtype` on `device`."""
    import transformers

    with tempfile.TemporaryDirectory() as d:
        export_hf(model, None, d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            d, local_files_only=True, dtype=dtype, attn_implementation=attn
        )
    return hf.to(device).eval()


def sleep_until(t0: float, t: float) -> None:
    time.sleep(max(0.0, t0 + t - time.perf_counter()))


def run_hf_cb(hf, trace, max_batch: int, sampling: dict, batch_tokens: int | None = 512) -> Timed:
    """transformers' continuous batching: its generation thread runs while this thread adds each
    request at its arrival time (`manager.add_request`), timestamps per token (`record_timestamps`).

    Its sampling switch (do_sample) is global, so every row samples and greedy rows get top_k=1 as a
    per-request setting (per_request_processors; the top-k processor runs for every row, with k = vocab,
    which keeps all, for the sampled ones). Its cache holds max_batch full-length requests, as ours
    does: sized explicitly, because on CPU its memory probe needs psutil (without it, it logs an ERROR
    line and sizes for the whole machine's RAM). batch_tokens: the tokens one forward pass may hold
    (None: its default, 8192); 512 on CPU keeps its [tokens, cache + tokens] attention mask small."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    hints = WorkloadHints(
        max_prompt_length=max(len(r.prompt) for r in trace),
        max_generated_length=max(r.max_new_tokens for r in trace),
        num_requests=len(trace),
    )
    page = 256
    gen = GenerationConfig(
        do_sample=True,
        **sampling,
        top_k=hf.config.vocab_size,
        eos_token_id=-1,  # no stop token
        pad_token_id=0,
        max_new_tokens=hints.max_generated_length,
    )
    cfg = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=max_batch * math.ceil((hints.max_prompt_length + hints.max_generated_length) / page),
        max_batch_tokens=batch_tokens,
        max_requests_per_batch=max_batch,
        per_request_processors=True,
        seed=0,
    )
    manager = hf.init_continuous_batching(
        generation_config=gen, continuous_batching_config=cfg, workload_hints=hints
    )
    manager.warmup()
    impl = hf.config._attn_implementation
    print(f"HF continuous batching: attention {impl}, {cfg.num_blocks} cache blocks of {page} tokens")
    manager.start()
    try:
        for r in trace[:2]:  # warm up, as the other sides do
            manager.add_request(r.prompt[:8], request_id=f"warm{r.index}", max_new_tokens=4)
        _collect(manager, 2)
        t0 = time.perf_counter()
        for r in sorted(trace, key=lambda r: r.arrival):
            sleep_until(t0, r.arrival)
            manager.add_request(
                r.prompt,
                request_id=str(r.index),
                max_new_tokens=r.max_new_tokens,
                record_timestamps=True,
                **({"top_k": 1} if r.greedy else {}),
            )
        out: Timed = {}
        for res in _collect(manager, len(trace)):
            stamps = res.timestamps if res.error is None and res.timestamps else [math.nan]
            out[int(res.request_id)] = (list(res.generated_tokens), stamps[0] - t0, stamps[-1] - t0)
    finally:
        manager.stop(block=True, timeout=10)
        manager.destroy()
    return out


def _collect(manager, n: int) -> list:
    """The next n finished results, or an error when its generation thread stopped first."""
    done = []
    while len(done) < n:
        res = manager.get_result(timeout=1)
        if res is not None and res.is_finished():
            done.append(res)
        elif res is None and not manager.is_running():
            raise RuntimeError(f"its generation thread stopped with {n - len(done)} requests unfinished")
    return done


class StepClock:
    """A generate streamer that records when each decoding step's tokens arrive (the first put is the
    prompt)."""

    def __init__(self, t0: float):
        self.t0, self.times, self.prompt_seen = t0, [], False

    def put(self, value) -> None:
        if self.prompt_seen:
            self.times.append(time.perf_counter() - self.t0)
        self.prompt_seen = True

    def end(self) -> None:
        pass


class GreedyRows:
    """Logits processor for a sampled batch: rows marked greedy keep only their argmax (it runs after
    temperature and top-p, which both keep the argmax), so sampling them picks it."""

    def __init__(self, greedy: torch.Tensor):
        self.greedy = greedy  # bool [B]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = scores.argmax(-1, keepdim=True)
        drop = self.greedy[:, None] & (torch.arange(scores.shape[-1], device=scores.device) != top)
        return scores.masked_fill(drop, -math.inf)


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) [B, P], each prompt at the right end, pad id 0."""
    P = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, P - len(p) :] = torch.tensor(p)
        mask[row, P - len(p) :] = 1
    return ids, mask


def run_hf_static(hf, trace, batch: int, sampling: dict) -> Timed:
    """HF generate on arrival-ordered batches of up to `batch`, one after another: a batch starts when
    its last request has arrived and the previous batch finished. Every row runs to the batch's longest
    max_new_tokens (min_new_tokens too: no early stop); a request's tokens are its first
    max_new_tokens, its last token time that of that step."""
    order = sorted(trace, key=lambda r: r.arrival)
    dev = hf.device
    warm = torch.tensor([order[0].prompt[:8]], device=dev)
    with torch.inference_mode():
        hf.generate(
            warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, do_sample=False, pad_token_id=0
        )
    out: Timed = {}
    t0 = time.perf_counter()
    for k in range(0, len(order), batch):
        group = order[k : k + batch]
        sleep_until(t0, group[-1].arrival)
        ids, mask = left_pad([r.prompt for r in group])
        new = max(r.max_new_tokens for r in group)
        greedy = torch.tensor([r.greedy for r in group], device=dev)
        sampled = not bool(greedy.all())
        clock = StepClock(t0)
        torch.manual_seed(k)
        with torch.inference_mode():
            seqs = hf.generate(
                ids.to(dev),
                attention_mask=mask.to(dev),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=sampled,
                **(dict(sampling, top_k=0) if sampled else {}),
                logits_processor=[GreedyRows(greedy)] if sampled else None,
                pad_token_id=0,
                eos_token_id=None,
                streamer=clock,
            )
        P = ids.shape[1]
        for row, r in enumerate(group):
            m = r.max_new_tokens
            out[r.index] = (seqs[row, P : P + m].tolist(), clock.times[0], clock.times[m - 1])
    return out
