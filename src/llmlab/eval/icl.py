"""In-context learning: what a model does from a prompt alone, with k worked examples and no gradient step.

Prompts. A base model sees plain text: k examples from the task's train split, then the question,

    <|bos|>Q: What is 3 + 4?\nA: 7\n\nQ: Spell the word cat.\nA: c a t\n\n ... Q: {question}\nA:

and a chat model sees the same examples as earlier user/assistant turns of a conversation rendered with
its chat template (k = 0: just the question). The k shots of test item i are the first k of a
permutation of the pool seeded by (seed, task, i), so the 1-shot prompt's example is also the first
of the 8-shot prompt's. When a prompt does not fit the context, the oldest shots are dropped.

Multiple choice. Each option c (followed by the answer terminator: "\\n" in plain text, `<|end|>` in a
chat) is scored by its log-likelihood given the prompt x,

    ℓ(c) = Σ_{j} log p(c_j | x, c_<j)           (summed: "acc")
    ℓ̄(c) = ℓ(c) / bytes(c)                      (length-normalised per UTF-8 byte: "acc_norm")

and the model's answer is argmax over the options. The terminator makes "cat cat" and "cat cat cat"
distinguishable (otherwise a prefix of another option always scores at least as high).

Generation. Greedy decoding until the terminator; correct when normalise(output) == normalise(answer),
where normalise lower-cases, trims, collapses whitespace and drops a final period.
"""

from __future__ import annotations

import random
import re

import torch

from llmlab.data.synthetic import Example
from llmlab.eval.tasks import Task
from llmlab.tokenizer.chat import BOS, END, REPLY_PREFIX, render_for_generation

DEFAULT_SHOTS = (0, 1, 2, 4, 8)


def normalize(text: str) -> str:
    """Lower-case, trim, collapse whitespace, drop one trailing period."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text[:-1].rstrip() if text.endswith(".") else text


def pick_shots(task: Task, i: int, k: int, seed: int = 0) -> list[Example]:
    """The k examples shown before test item i: a prefix of a fixed permutation of its pool."""
    pool = task.shots_pool(i)
    order = random.Random(f"{seed}:{task.name}:{i}").sample(range(len(pool)), len(pool))
    return [pool[j] for j in order[:k]]


def plain_prompt(tok, shots: list[Example], question: str) -> list[int]:
    """`<|bos|>Q: ...\\nA: ...\\n\\n` per shot, then `Q: question\\nA:`."""
    text = "".join(f"Q: {ex.prompt}\nA: {ex.answer}\n\n" for ex in shots) + f"Q: {question}\nA:"
    return [tok.special_tokens[BOS], *tok.encode_ordinary(text)]


def chat_prompt(tok, shots: list[Example], question: str) -> list[int]:
    """Shots as earlier user/assistant turns, then the question, ending with the assistant header."""
    messages = []
    for ex in shots:
        messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
    messages.append({"role": "user", "content": question})
    return render_for_generation(tok, messages)


def build_prompt(
    tok, task: Task, i: int, k: int, chat: bool, max_len: int, reserve: int = 0, seed: int = 0
) -> list[int]:
    """The prompt for test item i with up to k shots, dropping the oldest shots until prompt +
    `reserve` tokens fit in `max_len`."""
    shots = pick_shots(task, i, k, seed)
    make = chat_prompt if chat else plain_prompt
    while True:
        ids = make(tok, shots, task.test[i].prompt)
        if len(ids) + reserve <= max_len or not shots:
            return ids[-(max_len - reserve) :] if len(ids) + reserve > max_len else ids
        shots = shots[1:]


def continuation_ids(tok, choice: str, chat: bool) -> list[int]:
    """An option as the model would write it: after "A:" in plain text, or as an assistant turn
    (after the template's one space)."""
    if chat:
        return [*tok.encode_ordinary(REPLY_PREFIX + choice), tok.special_tokens[END]]
    return tok.encode_ordinary(" " + choice + "\n")


@torch.no_grad()
def score_continuations(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 32) -> list[float]:
    """Σ_j log p(cont_j | ctx, cont_<j) for each (ctx, cont) pair, batched and right-padded."""
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda j: -len(pairs[j][0]) - len(pairs[j][1]))
    out = [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [pairs[j][0] + pairs[j][1] for j in idx]
        T = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), T), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
        logp = torch.log_softmax(model(ids.to(device)).float(), dim=-1)
        for r, j in enumerate(idx):
            ctx, cont = pairs[j]
            pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=device)  # predicts cont
            out[j] = float(logp[r, pos, torch.tensor(cont, device=device)].sum())
    return out


def answer_logprobs(
    model,
    tok,
    task: Task,
    k: int,
    chat: bool = False,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
) -> list[tuple[float, int]]:
    """(Σ_j log p(a_j | x, a_<j), len(a)) for the correct answer a of each of the first n test items,
    with a written as `continuation_ids` (terminator included) after the k-shot prompt x that
    multiple choice scores. An answer longer than the context keeps its first context − 1 tokens."""
    n = len(task.test) if n is None else min(n, len(task.test))
    ctx_len = model.cfg.context
    pairs = []
    for i in range(n):
        cont = continuation_ids(tok, task.test[i].answer, chat)[: ctx_len - 1]
        ctx = build_prompt(tok, task, i, k, chat, ctx_len, reserve=len(cont), seed=seed)
        pairs.append((ctx, cont))
    return [(s, len(c)) for s, (_, c) in zip(score_continuations(model, pairs, batch_size), pairs)]


def score_mc(model, tok, task: Task, k: int, chat: bool, n: int, seed: int = 0, batch_size: int = 32) -> dict:
    """Multiple-choice accuracy (summed and byte-normalised log-likelihood) over the first n items."""
    ctx_len = model.cfg.context
    pairs, owners = [], []
    for i in range(n):
        conts = [continuation_ids(tok, c, chat) for c in task.test[i].choices]
        ctx = build_prompt(tok, task, i, k, chat, ctx_len, reserve=max(map(len, conts)), seed=seed)
        for c, cont in zip(task.test[i].choices, conts):
            pairs.append((ctx, cont))
            owners.append((i, c))
    scores = score_continuations(model, pairs, batch_size)
    per_item: dict[int, list[tuple[str, float, float]]] = {}
    for (i, c), s in zip(owners, scores):
        per_item.setdefault(i, []).append((c, s, s / max(1, len(c.encode("utf-8")))))
    correct = correct_norm = 0
    preds = []
    for i, opts in per_item.items():
        best = max(opts, key=lambda o: o[1])[0]
        best_norm = max(opts, key=lambda o: o[2])[0]
        correct += best == task.test[i].answer
        correct_norm += best_norm == task.test[i].answer
        preds.append(best)
    chance = sum(1 / len(task.test[i].choices) for i in range(n)) / max(1, n)
    return {
        "acc": correct / max(1, n),
        "acc_norm": correct_norm / max(1, n),
        "chance": chance,
        "predictions": preds,
    }


def score_gen(
    model, tok, task: Task, k: int, chat: bool, n: int, seed: int = 0, max_new_tokens: int | None = None
) -> dict:
    """Exact-match accuracy of greedy answers over the first n items."""
    from llmlab.generate import generate

    if max_new_tokens is None:
        max_new_tokens = max(len(tok.encode_ordinary(ex.answer)) for ex in task.test[:n]) + 4
    max_new_tokens = min(max_new_tokens, model.cfg.context - 1)  # leave the prompt at least one token
    prompts = [
        build_prompt(tok, task, i, k, chat, model.cfg.context, reserve=max_new_tokens, seed=seed)
        for i in range(n)
    ]
    outs = generate(
        model, tok, prompts, max_new_tokens=max_new_tokens, temperature=0, stop=None if chat else ["\n"]
    )
    outs = [o.split("\n")[0] if not chat else o for o in outs]
    hits = [normalize(o) == normalize(task.test[i].answer) for i, o in enumerate(outs)]
    return {"acc": sum(hits) / max(1, n), "predictions": [o.strip() for o in outs]}


def evaluate(
    model,
    tok,
    task: Task | str,
    shots: list[int] | tuple[int, ...] = DEFAULT_SHOTS,
    chat: bool = False,
    limit: int | None = None,
    seed: int = 0,
    kind: str | None = None,
    batch_size: int = 32,
) -> dict:
    """Accuracy of `model` on `task` for each k in `shots` → a JSON-able dict:

    {"task", "kind", "heldout", "chat", "n", "shots": [k...], "acc": [..], ("acc_norm", "chance" for mc),
     "examples": [{"prompt", "answer", "prediction"} ...]  (first items, largest k)}

    "heldout" says what the test split holds out (`llmlab.eval.tasks.HELDOUT_LABELS`, e.g. "recall:
    trained facts, new wording"), None for a user's task file.
    """
    from llmlab.eval.tasks import get_task

    if isinstance(task, str):
        task = get_task(task, kind)
    n = len(task.test) if limit is None else min(limit, len(task.test))
    was_training = model.training
    model.eval()
    result: dict = {
        "task": task.name,
        "kind": task.kind,
        "heldout": task.heldout or None,
        "chat": chat,
        "n": n,
        "shots": list(shots),
        "acc": [],
    }
    if task.kind == "mc":
        result.update(acc_norm=[], chance=None)
    last = {}
    for k in shots:
        if task.kind == "mc":
            r = score_mc(model, tok, task, k, chat, n, seed, batch_size)
            result["acc_norm"].append(r["acc_norm"])
            result["chance"] = r["chance"]
        else:
            r = score_gen(model, tok, task, k, chat, n, seed)
        result["acc"].append(r["acc"])
        last = r
    result["examples"] = [
        {"prompt": task.test[i].prompt, "answer": task.test[i].answer, "prediction": last["predictions"][i]}
        for i in range(min(5, n))
    ]
    model.train(was_training)
    return result
