"""`llmlab dpo` end to end on a tiny model, and its one-line errors for bad input."""

from __future__ import annotations

import json
import math

import pytest

import llmlab
from llmlab.align.data import load_preferences
from llmlab.cli import main
from llmlab.errors import UserError

PAIRS = [
    {"prompt": f"What is {a} + {b}?", "chosen": str(a + b), "rejected": str(a + b + 1)}
    for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (6, 3), (4, 4), (7, 1), (0, 5)]
]


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_dpo_cli_starts_at_ln2_and_learns_the_pairs(chat_dir, tmp_path, capsys):
    data = write(tmp_path / "prefs.jsonl", PAIRS)
    out = tmp_path / "dpo"
    args = ["dpo", "--model", str(chat_dir), "--data", str(data), "--out", str(out), "--json"]
    sets = ["train.device=cpu", "train.log_every=1", "dpo.steps=50", "dpo.batch_size=8", "dpo.lr=1e-2",
            "dpo.val_fraction=0"]  # fmt: skip
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    s = json.loads(capsys.readouterr().out)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["rewards/margins"] == 0.0  # π = π_ref
    assert s["loss"] < 0.3 and last["rewards/accuracies"] == 1.0 and last["rewards/margins"] > 1.0
    model, tok = llmlab.load(out)
    assert type(model).__name__ == "Transformer" and tok is not None
    assert (out / "generation.json").is_file()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "Hi", "chosen": "a"}, r"prefs.jsonl:2: missing field 'rejected'"),
        ({"prompt": "Hi", "chosen": "  ", "rejected": "b"}, r"prefs.jsonl:2: empty 'chosen'"),
        ({"prompt": "Hi", "chosen": "a", "rejected": 3}, r"prefs.jsonl:2: 'rejected' must be a non-empty"),
    ],
)
def test_bad_preference_lines_name_file_and_line(tmp_path, record, message):
    data = write(tmp_path / "prefs.jsonl", [PAIRS[0], record])
    with pytest.raises(UserError, match=message):
        load_preferences(str(data))


def test_cli_bad_input_exits_2_with_one_line(chat_dir, tmp_path, capsys):
    data = write(tmp_path / "prefs.jsonl", [PAIRS[0], {"prompt": "x", "chosen": "y"}])
    base = ["dpo", "--model", str(chat_dir), "--out", str(tmp_path / "o")]
    assert main([*base, "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "prefs.jsonl:2: missing field 'rejected'" in err and len(err.splitlines()) == 1
    assert main([*base, "--data", "builtin:arithmetic", "--set", "dpo.beta=0"]) == 2
    assert "dpo.beta" in capsys.readouterr().err
