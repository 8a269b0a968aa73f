import numpy as np
import torch

from llmlab.data.induction import SPAN_MIN, induction_batch, span_max, span_pair_row
from llmlab.train.losses import IGNORE_INDEX


def _spans(row: np.ndarray, longest: int) -> list[int]:
    """Parse a row into its span pairs s s s' s' … (slow reference): the span lengths, in order."""
    lengths, i = [], 0
    while len(row) - i >= 2 * longest:  # the last pair may be cut: parse only whole ones
        fits = [
            L for L in range(SPAN_MIN, longest + 1) if np.array_equal(row[i : i + L], row[i + L : i + 2 * L])
        ]
        assert len(fits) == 1, f"no single span pair at {i}: {fits}"
        lengths.append(fits[0])
        i += 2 * fits[0]
    return lengths


def test_a_row_is_pairs_of_repeated_spans_of_varying_length():
    rng = np.random.default_rng(0)
    rows = [span_pair_row(rng, 64, 2048)[0] for _ in range(50)]
    lengths = [L for row in rows for L in _spans(row, span_max(64))]
    assert all(len(r) == 64 and r.max() < 2048 and r.min() >= 0 for r in rows)
    assert len(set(lengths)) > 5  # the distance back varies: no head can copy by position alone
    assert span_max(64) == 16 and span_max(32) == 8
    for _ in range(50):  # a row of 32 parses into spans of 4-8 (a longer span would fit no length)
        assert _spans(span_pair_row(rng, 32, 2048)[0], 8)


def test_batches_are_a_pure_function_of_seed_and_step_and_ranks_slice_one_global_batch():
    x, y = induction_batch(64, 8, 100, seed=1, step=3)
    assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64
    kept = y[:, :-1] != IGNORE_INDEX
    assert torch.equal(x[:, 1:][kept], y[:, :-1][kept])
    assert torch.equal(x, induction_batch(64, 8, 100, seed=1, step=3)[0])
    assert not torch.equal(x, induction_batch(64, 8, 100, seed=1, step=4)[0])
    halves = [induction_batch(64, 4, 100, seed=1, step=3, rank=r, world_size=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)
    accum = [induction_batch(64, 2, 100, seed=1, step=3, micro=m, grad_accum=4)[0] for m in range(4)]
    assert torch.equal(torch.cat(accum), x)


def test_the_targets_are_a_repeats_tokens_after_its_first_and_nothing_else():
    rng = np.random.default_rng(1)
    for _ in range(30):
        row, predictable = span_pair_row(rng, 64, 2048)
        expected, i = np.zeros(64, bool), 0
        for L in _spans(row, span_max(64)):  # slow reference: parse the pairs, mark each repeat's 2nd..L-th
            expected[i + L + 1 : i + 2 * L] = True
            i += 2 * L
        assert np.array_equal(predictable[:i], expected[:i])
    x, y = induction_batch(32, 16, 2048, seed=0, step=0)
    kept = y != IGNORE_INDEX
    assert 0.3 < kept.float().mean() < 0.5  # (|s| − 1) of every 2|s| ids, |s| in 4..8
    # every kept target is a copy: the same id stands earlier in the row
    for b, t in kept.nonzero().tolist():
        assert (x[b, : t + 1] == y[b, t]).any()
