"""The induction probe: can a model copy a sequence it has just seen?

An induction head finds the earlier occurrence of the current token and predicts what followed it;
tool calls (operands into the call) and grounded answers (a fact out of a source) need it. The probe
feeds lists of held-out invented words (`llmlab.data.copying`, in no training text) and the same list
again, and compares the mean next-token loss on the two copies:

    first  = mean −log p(xₜ | x₍<ₜ₎) over the first list's tokens (after its first)
    repeat = the same over the repeat's tokens

A model without induction has repeat ≈ first; with it, repeat falls towards 0. The pretraining
stage reports both for the base model, and how far back the model copies:

    copy_by_distance[g] = repeat's mean loss on 3 held-out words (after its first token) when g
                          other held-out words stand between the list and its repeat

A head that matches content copies at every g; one that learned "the copy is 4–8 tokens back"
(what rows of adjacent span pairs can teach) copies at g = 0 only.

    from llmlab.eval.induction import induction_score
    induction_score(model, tok)          # {"first": 5.2, "repeat": 4.9, "lists": 30, "words": 6}
    copy_by_distance(model, tok)         # {0: 2.04, 4: 1.94, 16: 4.56, 48: 5.65} (cpu-demo)
"""

from __future__ import annotations

import random

import torch

from llmlab.data.copying import HELDOUT


@torch.no_grad()
def induction_score(model, tok, lists: int = 30, words: int = 6, seed: int = 0) -> dict:
    """Mean loss (nats/token) on `lists` lists of `words` held-out invented words, then on each list
    repeated right after it."""
    rng = random.Random(seed)
    pool = sorted(HELDOUT)
    first, repeat = [], []
    device = next(model.parameters()).device
    for _ in range(lists):
        text = " ".join(rng.sample(pool, words))
        a, b = tok.encode_ordinary(text + "."), tok.encode_ordinary(" " + text + ".")
        ids = torch.tensor([a + b], device=device)[:, : model.cfg.context + 1]
        logp = model(ids[:, :-1]).float().log_softmax(-1)
        nll = -logp[0].gather(-1, ids[0, 1:, None])[:, 0]
        first.append(nll[: len(a) - 1].mean().item())
        repeat.append(nll[len(a) - 1 :].mean().item())
    return {"first": sum(first) / lists, "repeat": sum(repeat) / lists, "lists": lists, "words": words}


@torch.no_grad()
def copy_by_distance(
    model, tok, gaps: tuple[int, ...] = (0, 4, 16, 48), words: int = 3, lists: int = 20, seed: int = 0
) -> dict[int, float]:
    """Mean loss (nats/token) on the repeat of `words` held-out invented words (after its first
    token) when `g` other held-out words stand between the list and its repeat, for each g in `gaps`.
    All words of one text are distinct, so only the earlier copy predicts the repeat."""
    rng = random.Random(seed)
    pool = sorted(HELDOUT)
    device = next(model.parameters()).device
    out = {}
    for g in gaps:
        total = 0.0
        for _ in range(lists):
            chosen = rng.sample(pool, words + g)
            span, filler = " ".join(chosen[:words]), " ".join(chosen[words:])
            a = tok.encode_ordinary(f"List: {span} {filler}".rstrip() + ".")  # every word after a space
            b = tok.encode_ordinary(" " + span)
            if len(a) + len(b) > model.cfg.context + 1:
                break  # this gap does not fit the context: leave it out
            ids = torch.tensor([a + b], device=device)
            logp = model(ids[:, :-1]).float().log_softmax(-1)
            nll = -logp[0].gather(-1, ids[0, 1:, None])[:, 0]
            total += nll[len(a) :].mean().item()  # the repeat after its first token
        else:
            out[g] = total / lists
    return out
