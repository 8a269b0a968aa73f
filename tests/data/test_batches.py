import numpy as np
import torch

from llmlab.data.batches import eval_windows, sample_windows, window_starts


def stream(n=1000):
    return np.arange(n, dtype=np.uint16)  # token i == position i, so windows are easy to check


def test_windows_are_shifted_slices_of_the_stream():
    x, y = sample_windows(stream(), context=16, batch_size=5, seed=0, step=3)
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.int64
    for row_x, row_y in zip(x, y):
        s = int(row_x[0])
        assert torch.equal(row_x, torch.arange(s, s + 16))
        assert torch.equal(row_y, torch.arange(s + 1, s + 17))  # targets = next tokens


def test_windows_stay_inside_the_stream():
    starts = window_starts(n_tokens=20, context=16, global_batch=10_000, seed=1, step=0)
    assert starts.min() == 0 and starts.max() == 20 - 16 - 1  # the last window ends exactly at the end


def test_deterministic_in_seed_and_step():
    a = sample_windows(stream(), 8, 4, seed=7, step=11)
    b = sample_windows(stream(), 8, 4, seed=7, step=11)
    c = sample_windows(stream(), 8, 4, seed=7, step=12)
    d = sample_windows(stream(), 8, 4, seed=8, step=11)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


def test_ranks_and_micro_batches_partition_the_global_batch():
    """2 ranks × batch 3, or 2 micro-batches × batch 3, see exactly the rows of 1 rank × batch 6."""
    whole = sample_windows(stream(), 8, 6, seed=3, step=5)[0]
    ranks = torch.cat(
        [sample_windows(stream(), 8, 3, seed=3, step=5, rank=r, world_size=2)[0] for r in (0, 1)]
    )
    micro = torch.cat(
        [sample_windows(stream(), 8, 3, seed=3, step=5, micro=m, grad_accum=2)[0] for m in (0, 1)]
    )
    assert torch.equal(whole, ranks) and torch.equal(whole, micro)


def test_eval_windows_fixed_non_overlapping_and_in_range():
    starts = eval_windows(n_tokens=1001, context=10, max_windows=7)
    assert len(starts) == 7 and np.all(np.diff(starts) >= 10)
    assert starts[-1] + 10 + 1 <= 1001
    all_windows = eval_windows(n_tokens=101, context=10, max_windows=10**6)
    assert list(all_windows) == list(range(0, 100, 10))
