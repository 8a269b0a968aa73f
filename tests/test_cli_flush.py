"""`llmlab.cli.flush_subnormals` starts every CPU worker thread of torch with subnormals as zero,
and leaves the calling thread's Python floats alone.

Each case runs in a fresh interpreter (the flag is per thread, and a new thread copies its creator's).
After the call the main thread turns the flag on, as `train()` does; then a tensor of subnormals
times 1.0, split over 2 threads, comes out all zero only when the workers were started by the call,
not before it."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import numpy as np
import torch
from llmlab.cli import flush_subnormals
torch.set_num_threads(2)
x = torch.from_numpy(np.full(1 << 22, 1e-39, dtype=np.float32))  # numpy: torch's pool not started
if {pool_first}:
    (torch.ones(1 << 22) * 2.0).sum()  # the pool starts here, before the flag
flush_subnormals()
python_floats_intact = 5e-324 > 0
torch.set_flush_denormal(True)
y = x * 1.0
print(int((y == 0).sum()), y.numel(), python_floats_intact)
"""


@pytest.mark.parametrize("pool_first", [False, True])
def test_every_worker_flushes_only_when_started_by_it(pool_first):
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(pool_first=pool_first)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    zeros, n, intact = int(out[0]), int(out[1]), out[2]
    assert intact == "True"
    if pool_first:
        assert 0 < zeros < n  # the main thread flushes its share, the older worker does not
    else:
        assert zeros == n
