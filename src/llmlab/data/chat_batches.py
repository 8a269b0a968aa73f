"""Chat batches for SFT: padded rows, or several conversations packed into one row.

A tokenized conversation is (ids x_0..x_{L-1}, loss mask m_0..m_{L-1}). It gives L − 1 predictions:
input x_t, target x_{t+1}, kept only where m_{t+1} = 1 (else IGNORE_INDEX). Loss over a batch is the
mean over kept targets, L = −Σ log p(target) / #kept, so how conversations are arranged in rows does
not change it:

* padded: one conversation per row, right-padded to the longest in the batch. Plain causal attention
  is enough: a real token never sees the padding that comes after it. With `micro_batches = k` a
  step's rows are sorted by length and cut into k micro-batches, each padded to its own longest: the
  loop sums the loss over them and divides by the step's target count, so the gradient is the one of
  the whole batch, while 8 random conversations pad to about 2/3 of the positions at k = 4.
* packed: conversations laid end to end in rows of `row_len` positions. Each restarts its RoPE
  positions at 0 and attends only within itself (a block-diagonal causal mask, [B, 1, T, T]), so a
  packed row computes exactly what the conversations would compute alone (tested).

Both give a dict {"ids", "targets", "positions", "attn_mask"} ([B, T] int64; positions and attn_mask
are None for padded batches) that `sft_loss` feeds to the model.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # the same as llmlab.train.losses.IGNORE_INDEX (F.cross_entropy's default)

Seq = tuple[list[int], list[int]]  # (ids, loss_mask)


def inputs_targets(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """x[:-1] and x[1:] with untrained targets replaced by IGNORE_INDEX."""
    return ids[:-1], [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]


def pad_batch(seqs: list[Seq], pad_id: int = 0) -> dict:
    """One conversation per row, right-padded to the longest (padding targets are ignored)."""
    pairs = [inputs_targets(ids, mask) for ids, mask in seqs]
    T = max(len(x) for x, _ in pairs)
    ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        targets[i, : len(y)] = torch.tensor(y)
    return {"ids": ids, "targets": targets, "positions": None, "attn_mask": None}


def pack_rows(lengths: list[int], row_len: int) -> list[list[int]]:
    """Greedy next-fit: indices of sequences (in the given order) grouped into rows whose inputs
    (length − 1 positions each) fit in `row_len`. A sequence longer than a row gets a row alone
    (callers truncate to the context beforehand)."""
    rows: list[list[int]] = []
    used = row_len + 1
    for i, n in enumerate(lengths):
        n_pos = n - 1
        if used + n_pos > row_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n_pos
    return rows


def pack_batch(rows: list[list[Seq]], row_len: int, pad_id: int = 0) -> dict:
    """Rows of several conversations each → ids, targets, per-conversation positions and a
    block-diagonal causal mask (True = may attend). Unused tail positions attend only to themselves
    (a query with no visible key would give NaN) and have ignored targets."""
    B = len(rows)
    ids = torch.full((B, row_len), pad_id, dtype=torch.long)
    targets = torch.full((B, row_len), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((B, row_len), dtype=torch.long)
    doc = torch.full((B, row_len), -1, dtype=torch.long)  # which conversation each slot holds
    for b, row in enumerate(rows):
        start = 0
        for j, (seq_ids, seq_mask) in enumerate(row):
            x, y = inputs_targets(seq_ids, seq_mask)
            n = len(x)
            ids[b, start : start + n] = torch.tensor(x)
            targets[b, start : start + n] = torch.tensor(y)
            positions[b, start : start + n] = torch.arange(n)
            doc[b, start : start + n] = j
            start += n
        pad = torch.arange(row_len) >= start
        doc[b, pad] = -2 - torch.arange(int(pad.sum()))  # every padding slot its own "document"
    causal = torch.ones(row_len, row_len, dtype=torch.bool).tril()
    same_doc = doc[:, :, None] == doc[:, None, :]
    attn_mask = (same_doc & causal)[:, None]  # [B, 1, T, T]
    return {"ids": ids, "targets": targets, "positions": positions, "attn_mask": attn_mask}


class ChatBatches:
    """The SFT batch source: `batches.get(step)` is a deterministic function of (seed, step).

    Each epoch shuffles the conversations with a generator seeded by (seed, epoch), groups them into
    rows (one per row, or packed into `row_len` positions), and deals `batch_size` rows per step, so
    resuming at step k gives exactly the batch an uninterrupted run gives. `get(step, micro)` is
    micro-batch `micro` of `micro_batches`: the step's rows, shortest first, cut into that many.
    """

    def __init__(
        self,
        seqs: list[Seq],
        batch_size: int,
        row_len: int,
        pack: bool = True,
        seed: int = 0,
        pad_id: int = 0,
        micro_batches: int = 1,
    ):
        self.seqs, self.batch_size, self.row_len = seqs, batch_size, row_len
        self.pack, self.seed, self.pad_id, self.micro_batches = pack, seed, pad_id, micro_batches
        self._epoch, self._rows = -1, []
        self.steps_per_epoch = max(1, len(self._rows_of(0)) // batch_size)

    def _rows_of(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.seqs)).tolist()
        if not self.pack:
            return [[i] for i in order]
        rows = pack_rows([len(self.seqs[i][0]) for i in order], self.row_len)
        return [[order[k] for k in row] for row in rows]

    def get(self, step: int, micro: int = 0) -> dict:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._rows = epoch, self._rows_of(epoch)
        rows = self._rows[i * self.batch_size : (i + 1) * self.batch_size]
        rows += self._rows[: self.batch_size - len(rows)]  # packing may vary by epoch: keep batches full
        if self.micro_batches > 1:  # similar lengths side by side, so each micro-batch pads less
            rows = sorted(rows, key=lambda r: sum(len(self.seqs[k][0]) for k in r))
            cut = np.linspace(0, len(rows), self.micro_batches + 1).round().astype(int)
            rows = rows[cut[micro] : cut[micro + 1]]
        if not self.pack:
            return pad_batch([self.seqs[r[0]] for r in rows], self.pad_id)
        return pack_batch([[self.seqs[k] for k in r] for r in rows], self.row_len, self.pad_id)

    def n_target_tokens(self) -> int:
        """Trained-on targets in one epoch (for reporting)."""
        return sum(sum(m[1:]) for _, m in self.seqs)
