"""Rollouts for RL (PPO, GRPO): prompts, k samples each from the decoding engine, training batches.

The engine samples every prompt's k completions from one prefill (`add_request(..., n=k)`) and
records log p(token) under the model at temperature 1 for every sampled token, which equals a
training forward (the engine's tests pin it): those are π_old of the first PPO/GRPO update, so
the first ratio is 1 without another forward. A completion that ends with <|end|> keeps it as its
last token (the policy learns to stop); the engine does not record the stop token's log-prob, so
`fill_stop_logprobs` takes it from a forward of the same policy.

Per-token tensors live on the target grid of `token_logprobs`: column t is the prediction of
ids[:, t+1], and mask[b, t] = 1 when ids[b, t+1] is a completion token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from llmlab.errors import UserError
from llmlab.tokenizer.chat import END, render_for_generation


@dataclass
class Prompt:
    ids: list[int]
    answer: str | None = None  # for verifiable rewards (GRPO)


@dataclass
class Sample:
    prompt: list[int]
    tokens: list[int]  # the completion, with <|end|> last when it finished
    logprobs: list[float]  # engine log-probs of `tokens` (nan where not recorded: the stop token)
    finished: bool  # ended with <|end|> (not cut at max_new_tokens)
    text: str = ""
    answer: str | None = None
    extra: dict = field(default_factory=dict)


def load_prompts(tok, source: str, split: str = "train") -> list[Prompt]:
    """Prompts from builtin:TASK (its questions and answers) or a JSONL file of {"prompt", "answer"?}
    records (a preference file works too: its prompts are used)."""
    import json
    from pathlib import Path

    if source.startswith("builtin:"):
        from llmlab.data import synthetic

        exs = synthetic.examples(source.split(":", 1)[1], split)
        return [
            Prompt(render_for_generation(tok, [{"role": "user", "content": e.prompt}]), e.answer) for e in exs
        ]
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such prompt file; pass a .jsonl file or builtin:TASK")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict) or "prompt" not in obj:
            raise UserError(f"{path}:{lineno}: missing field 'prompt'")
        p = obj["prompt"]
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else p
        try:
            ids = render_for_generation(tok, msgs)
        except UserError as e:
            raise UserError(f"{path}:{lineno}: {e}") from None
        out.append(Prompt(ids, None if obj.get("answer") is None else str(obj["answer"])))
    if not out:
        raise UserError(f"{path}: no prompts in the file")
    return out


def prompt_batch(prompts: list[Prompt], batch_size: int, index: int, seed: int) -> list[Prompt]:
    """Batch `index` of a seeded epoch order over the prompts (a pure function of index)."""
    per_epoch = max(1, len(prompts) // batch_size)
    epoch, i = divmod(index, per_epoch)
    order = list(range(len(prompts)))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return [prompts[j % len(prompts)] for j in order[i * batch_size : (i + 1) * batch_size]] or prompts[
        :batch_size
    ]


@torch.no_grad()
def sample(
    model, tok, prompts: list[Prompt], k: int, *, max_new_tokens: int, temperature: float, seed: int
) -> list[Sample]:
    """k samples per prompt from the engine, grouped contiguously (prompt i's at [i·k, (i+1)·k)).
    A completion stops at the context (the <|end|> the engine stops on counts as one of its
    tokens), so that every row fits each model that scores it: policy, reference, value and reward."""
    from llmlab.generate import Engine, SamplingParams

    end = tok.special_tokens[END]
    engine = Engine(model, tok, max_batch=min(64, max(k, len(prompts) * k)))
    rids = []
    for i, p in enumerate(prompts):
        room = max(1, engine.cfg.context - len(p.ids))
        params = SamplingParams(
            temperature=temperature, max_new_tokens=min(max_new_tokens, room), seed=seed * 1000 + i * k, logprobs=0,
            stop_token_ids=[end],  # only <|end|> ends a response (then appended as its last token)
        )  # fmt: skip
        rids.append(engine.add_request(p.ids, params, n=k))
    slot = {rid: i for i, rid in enumerate(rids)}
    toks: dict[tuple[int, int], list[int]] = {}
    lps: dict[tuple[int, int], list[float]] = {}
    done: dict[tuple[int, int], bool] = {}
    while engine.has_unfinished():
        for ev in engine.step():
            key = (slot[ev.request_id], ev.index)
            if ev.token_id is not None:
                toks.setdefault(key, []).append(ev.token_id)
                lps.setdefault(key, []).append(float(ev.logprob))
            if ev.finished:
                done[key] = ev.finish_reason == "stop" and ev.token_id is None
    out = []
    for i, p in enumerate(prompts):
        for j in range(k):
            t, lp, fin = toks.get((i, j), []), lps.get((i, j), []), done.get((i, j), False)
            text = tok.decode(t)
            if fin:
                t, lp = [*t, end], [*lp, float("nan")]
            out.append(Sample(p.ids, t, lp, fin, text, p.answer))
    return out


def rl_batch(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """{"ids" [B, T], "mask" [B, T−1] (completion targets), "old_logps" [B, T−1] (engine; nan at
    stop tokens), "finished" [B]}, right-padded."""
    rows = [s.prompt + s.tokens for s in samples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width - 1))
    old = torch.zeros((len(rows), width - 1))
    for b, (s, r) in enumerate(zip(samples, rows)):
        ids[b, : len(r)] = torch.tensor(r)
        start, stop = len(s.prompt) - 1, len(r) - 1  # targets ids[start+1 .. len(r)-1]
        mask[b, start:stop] = 1
        old[b, start:stop] = torch.tensor(s.logprobs) if s.logprobs else 0.0
    return {
        "ids": ids,
        "mask": mask,
        "old_logps": old,
        "finished": torch.tensor([s.finished for s in samples]),
    }


def fill_stop_logprobs(batch: dict, policy_logps: torch.Tensor) -> None:
    """Where the engine recorded nothing (stop tokens), π_old is the policy's own forward value."""
    old = batch["old_logps"]
    gap = torch.isnan(old)
    batch["old_logps"] = torch.where(gap, policy_logps, old)
    m = batch["mask"].bool() & ~gap
    batch["logprob_gap"] = (old[m] - policy_logps[m]).abs().max() if m.any() else torch.zeros(())
