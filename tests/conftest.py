"""Fixtures shared across test folders."""

from __future__ import annotations

import json

import pytest

TEXT = "".join(
    f"The {w} of the {v} is {u}.\n"
    for w in ("king", "queen", "fool", "lord")
    for v in ("night", "day", "sea", "field")
    for u in ("fair", "foul", "sweet", "sad")
)

SPEC = """
[sweep]
depths = [1, 2]
aspect = 16
head_dim = 16
budgets = [{budget}]
count = "non_embedding"
min_steps = 2

[sweep.forecast]
depth = 1
tokens = 1024

[data]
source = {source}
vocab_size = 300

[model]
context = 16

[train]
batch_size = 4
lr = 3e-3
eval_batches = 2
log_every = 1000
device = "cpu"
"""


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    """A tiny sweep spec (2 depths, one IsoFLOP budget, a forecast run) over a 10-file local corpus;
    $LLMLAB_HOME points into tmp_path."""
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(10):
        (folder / f"doc{i}.txt").write_text(TEXT * 3)
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(source=json.dumps(str(folder)), budget="2e8"))
    return path
