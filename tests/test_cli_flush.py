"""`llmlab.cli.flush_subnormals` reaches every CPU thread torch uses, not only the calling one.

Each case runs in a fresh interpreter (the flag is per thread, and a new thread copies its creator's):
a tensor of subnormals times 1.0, split over 2 threads, comes out all zero only when the flag was set
before the thread pool started."""

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
y = x * 1.0
print(int((y == 0).sum()), y.numel())
"""


@pytest.mark.parametrize("pool_first", [False, True])
def test_every_thread_flushes_only_when_set_before_the_pool(pool_first):
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(pool_first=pool_first)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    zeros, n = int(out[0]), int(out[1])
    if pool_first:
        assert 0 < zeros < n  # the main thread flushes its share, the older worker does not
    else:
        assert zeros == n
