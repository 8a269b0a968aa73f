"""A preference pair in one row that reads its prompt once: DPO's batches.

    row       prompt x (p tokens) | chosen y_c (c) | rejected y_r (r)     right-padded to the longest row
    position  0 … p−1             | p … p+c−1      | p … p+r−1           (y_r restarts after the prompt)
    mask      causal, except that no y_r query sees a y_c key

Every y_r token then sees exactly x and its own prefix, at the positions it has in a row of its
own, so each hidden state is the one of the two-row layout (`data.pair_batch`: x + y_c and x + y_r)
up to float summation order, while x is computed once per pair instead of twice. The LM head runs
only at the c + r positions whose next token is scored (h[k] predicts the token after slot k):

    log π(y_c|x) = Σ_{j<c} lp(h[p−1+j], y_c[j])
    log π(y_r|x) = lp(h[p−1], y_r[0]) + Σ_{1≤j<r} lp(h[p+c+j−1], y_r[j])

A pair's rows carry p + c + r positions instead of 2p + c + r (the built-in arithmetic pairs:
~14 instead of ~25), which is what makes a DPO step cheaper; the loss and its gradient are those
of the two-row layout (tests/align/test_shared_prompt.py).
"""

from __future__ import annotations

import torch

from llmlab.align.data import PairSeq
from llmlab.model.logprobs import selected_logprobs


def shared_prompt_batch(pairs: list[PairSeq], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """{"ids", "positions" [P, W], "attn_mask" [P, 1, W, W] (True = may attend), "source",
    "targets", "segment" [N] (the scored slots, their next tokens and their completion: pair i's
    chosen is i, its rejected P + i), "lengths" [2P] (completion tokens, chosen rows first)}."""
    n = len(pairs)
    width = max(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    mask = torch.ones((n, width, width), dtype=torch.bool).tril()
    source: list[int] = []
    targets: list[int] = []
    segment: list[int] = []
    for i, pair in enumerate(pairs):
        p, c, r = len(pair.prompt), len(pair.chosen), len(pair.rejected)
        if p == 0:
            raise ValueError("shared_prompt_batch: an empty prompt has no slot that predicts the first token")
        row = pair.prompt + pair.chosen + pair.rejected
        ids[i, : len(row)] = torch.tensor(row)
        positions[i, : p + c] = torch.arange(p + c)
        positions[i, p + c : p + c + r] = torch.arange(p, p + r)
        mask[i, p + c :, p : p + c] = False
        base = i * width
        source += [base + p - 1 + j for j in range(c)]
        source += [base + p - 1 + (c + j if j else 0) for j in range(r)]
        targets += pair.chosen + pair.rejected
        segment += [i] * c + [n + i] * r
    return {
        "ids": ids,
        "positions": positions,
        "attn_mask": mask[:, None],
        "source": torch.tensor(source),
        "targets": torch.tensor(targets),
        "segment": torch.tensor(segment),
        "lengths": torch.tensor([len(p.chosen) for p in pairs] + [len(p.rejected) for p in pairs]),
    }


def shared_prompt_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[2P] summed completion log-probs (the P chosen, then the P rejected) of a
    `shared_prompt_batch` under `model` (an llmlab `Transformer`, possibly DDP-wrapped/compiled)."""
    lp = selected_logprobs(
        model, batch["ids"], batch["source"], batch["targets"],
        positions=batch["positions"], attn_mask=batch["attn_mask"],
    )  # fmt: skip
    return lp.new_zeros(batch["lengths"].shape[0]).index_add(0, batch["segment"], lp)
