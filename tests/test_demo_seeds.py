"""benchmarks/demo_seeds.py's table on fixed speedrun summaries: per seed, then min / median / max
and met counts across seeds (no run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_demo_seeds():
    spec = importlib.util.spec_from_file_location("demo_seeds", ROOT / "benchmarks" / "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(stage: str, status: str, wall_s: float | None) -> dict:
    return {"stage": stage, "status": status, "wall_s": wall_s, "summary": ""}


SUMMARIES = [
    {
        "seed": 0,
        "wall_s": 4.0,  # a rerun that reused every stage: the stages' own times count
        "machine": {"torch": "2.13.0", "torch_threads": 2},
        "rows": [row("pretrain", "cached", 100.0), row("midtrain", "ran", 200.0), row("sft", "failed", 5.0)],
        "targets": {
            "arithmetic_tool": {"without": 0.05, "with": 0.96},  # met
            "copy": {"without": None, "with": 0.5},  # goal 0.6: missed
            "agent": {"without": 0.0, "with": 0.7},  # met
        },
    },
    {
        "seed": 1,
        "wall_s": 360.0,
        "machine": {"torch": "2.13.0", "torch_threads": 1},
        "rows": [row("pretrain", "ran", 120.0), row("midtrain", "ran", 240.0), row("samples", "off", None)],
        "targets": {
            "arithmetic_tool": {"without": 0.2, "with": 0.9},  # 0.9 but without > 0.1: missed
            "copy": {"without": None, "with": 0.8},  # met
            "extra": {"without": None, "with": 0.25},  # no goal; agent not measured
        },
    },
]


def test_seed_stats_and_table():
    demo_seeds = load_demo_seeds()
    stats = demo_seeds.seed_stats(SUMMARIES)
    assert list(stats["targets"]) == ["arithmetic_tool", "copy", "agent", "extra"]  # GOALS order first
    s0, s1 = stats["seeds"]
    assert (s0["wall_s"], s1["wall_s"], s0["threads"], s0["failed"], s1["failed"]) == (
        300.0,
        360.0,
        2,
        ["sft"],
        [],
    )
    assert [t["met"] for t in s0["targets"].values()] == [True, False, True]
    assert [t["met"] for t in s1["targets"].values()] == [False, True, None]
    t = stats["targets"]
    assert (t["arithmetic_tool"]["min"], t["arithmetic_tool"]["max"]) == (0.9, 0.96)
    assert t["arithmetic_tool"]["median"] == pytest.approx(0.93)
    assert t["arithmetic_tool"]["goal"] == 0.9 and t["arithmetic_tool"]["most_without"] == 0.1
    assert [t[n]["met"] for n in t] == [1, 1, 1, 0] and {t[n]["of"] for n in t} == {2}
    assert (t["copy"]["min"], t["copy"]["median"], t["copy"]["max"]) == (0.5, pytest.approx(0.65), 0.8)
    assert (t["agent"]["min"], t["agent"]["median"], t["agent"]["max"]) == (0.7, 0.7, 0.7)
    assert t["extra"]["goal"] is None
    assert stats["wall_s"] == {"min": 300.0, "median": 330.0, "max": 360.0}

    lines = demo_seeds.format_stats(stats).splitlines()
    assert lines[0].startswith("seed 0") and "5m00s" in lines[0] and "met 2/4" in lines[0]
    assert "arithmetic_tool 0.96 (without 0.05), copy 0.50, agent 0.70  FAILED: sft" in lines[0]
    assert "met 1/4" in lines[1] and "extra 0.25" in lines[1]
    table = {line.split()[0]: line.split() for line in lines[3:]}
    assert table["arithmetic_tool"][1:4] == ["0.90", "0.93", "0.96"] and table["arithmetic_tool"][-2:] == [
        "1/2",
        "seeds",
    ]
    assert table["copy"][1:4] == ["0.50", "0.65", "0.80"]
    assert table["extra"][-1] == "-"  # no goal, no met count
    assert table["wall"][2:] == ["5m00s", "5m30s", "6m00s"]


def test_no_summaries_is_an_empty_table():
    demo_seeds = load_demo_seeds()
    stats = demo_seeds.seed_stats([])
    assert stats == {"seeds": [], "targets": {}, "wall_s": {"min": None, "median": None, "max": None}}
    assert demo_seeds.format_stats(stats).splitlines()[-1].split() == ["wall", "time", "-", "-", "-"]
