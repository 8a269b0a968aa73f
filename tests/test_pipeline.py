"""The generic stage runner (`llmlab.pipeline`) with stub stages: caching, fingerprints, resumption."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmlab.config import load_recipe
from llmlab.errors import UserError
from llmlab.pipeline import Stage, StageContext, run_stages, summary_table, to_jsonable
from llmlab.speedrun import speedrun


# ---------------------------------------------------------------------------------------------------
# Stub stages: each records its calls and writes one output file.
# ---------------------------------------------------------------------------------------------------
def make_stages(calls: list[str], fail: set[str] | None = None) -> list[Stage]:
    fail = fail if fail is not None else set()

    def stub(name: str):
        def fn(run: StageContext) -> dict:
            calls.append(name)
            if name in fail:
                raise RuntimeError(f"{name} broke")
            f = run.dir(name) / "out.txt"
            f.write_text(name)
            upstream = {k: v["value"] for k, v in run.results.items()}
            return {
                "outputs": [run.rel(f)],
                "value": len(calls),
                "upstream": upstream,
                "tokens": 1000,
                "summary": f"{name} ok",
            }

        return fn

    return [
        Stage("a", "first", stub("a"), reads=("data.source",)),
        Stage("b", "second", stub("b"), reads=("train.steps",), needs=("a",)),
        Stage("c", "third", stub("c"), reads=("speedrun.seed",), needs=("b",)),
        Stage("d", "side", stub("d"), reads=("model",), needs=("a",)),
    ]


def recipe(*overrides: str):
    return load_recipe(None, list(overrides))


def go(tmp_path, calls, *overrides, fail=None, **kw):
    return speedrun(
        recipe(*overrides), tmp_path, stages=make_stages(calls, fail), report=False, echo=lambda s: None, **kw
    )


def test_stages_run_in_order_and_save_their_dicts(tmp_path):
    calls: list[str] = []
    summary = go(tmp_path, calls)
    assert calls == ["a", "b", "c", "d"]
    assert [r["status"] for r in summary["rows"]] == ["ran"] * 4
    saved = json.loads((tmp_path / "c" / "stage.json").read_text())
    assert saved["stage"] == "c" and saved["value"] == 3 and saved["upstream"] == {"a": 1, "b": 2}
    assert saved["outputs"] == ["c/out.txt"]  # relative to the run folder
    assert saved["wall_s"] >= 0 and len(saved["fingerprint"]) == 16 and saved["summary"] == "c ok"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_second_call_reuses_every_valid_stage(tmp_path):
    calls: list[str] = []
    go(tmp_path, calls)
    calls.clear()
    summary = go(tmp_path, calls)
    assert calls == []
    assert [r["status"] for r in summary["rows"]] == ["cached"] * 4
    assert summary["results"]["c"]["value"] == 3  # the saved dict is reused


def test_changed_recipe_key_reruns_that_stage_and_its_dependants_only(tmp_path):
    calls: list[str] = []
    go(tmp_path, calls)
    calls.clear()
    go(tmp_path, calls, "train.steps=7")  # b reads train.steps; c needs b; a and d do not
    assert calls == ["b", "c"]
    calls.clear()
    go(tmp_path, calls, "train.steps=7", "model.n_layer=3")
    assert calls == ["d"]


def test_missing_output_file_invalidates_a_stage(tmp_path):
    calls: list[str] = []
    go(tmp_path, calls)
    (tmp_path / "d" / "out.txt").unlink()
    calls.clear()
    go(tmp_path, calls)
    assert calls == ["d"]


def test_corrupt_stage_json_reruns_the_stage(tmp_path):
    calls: list[str] = []
    go(tmp_path, calls)
    (tmp_path / "c" / "stage.json").write_text("{half")
    calls.clear()
    go(tmp_path, calls)
    assert calls == ["c"]


def test_force_and_from(tmp_path):
    calls: list[str] = []
    go(tmp_path, calls)
    calls.clear()
    go(tmp_path, calls, force=["b"])  # b gets a new run id, so c (which needs b) reruns too
    assert calls == ["b", "c"]
    calls.clear()
    go(tmp_path, calls, from_stage="c")
    assert calls == ["c", "d"]
    with pytest.raises(UserError, match="unknown speedrun stage 'nope'; stages: a, b, c, d"):
        go(tmp_path, calls, force=["nope"])


def test_skip_turns_a_stage_off_and_blocks_what_needs_it(tmp_path):
    calls: list[str] = []
    summary = go(tmp_path, calls, 'speedrun.skip=["b"]')
    assert calls == ["a", "d"]
    assert [r["status"] for r in summary["rows"]] == ["ran", "off", "blocked", "ran"]
    assert summary["rows"][2]["summary"] == "needs b"


def test_unavailable_module_is_reported_not_fatal(tmp_path):
    calls: list[str] = []
    stages = make_stages(calls)
    stages[1].requires = ("llmlab.no_such_module",)
    lines: list[str] = []
    rows = run_stages(stages, StageContext(recipe=recipe(), out=tmp_path), echo=lines.append)
    assert [r["status"] for r in rows] == ["ran", "unavailable", "blocked", "ran"]
    assert any("[2/4] b          unavailable (not installed: llmlab.no_such_module)" in s for s in lines)


def test_failed_stage_keeps_earlier_work_and_the_next_call_continues(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="b broke"):
        go(tmp_path, calls, fail={"b"})
    assert calls == ["a", "b"]
    assert (tmp_path / "a" / "stage.json").exists() and not (tmp_path / "b" / "stage.json").exists()
    calls.clear()
    go(tmp_path, calls)
    assert calls == ["b", "c", "d"]


def test_only_an_interrupted_attempt_with_the_same_inputs_resumes(tmp_path):
    seen: list[tuple[str, bool]] = []

    def stages(fail: set[str]) -> list[Stage]:
        def fn(run: StageContext) -> dict:
            seen.append((run.recipe.train.steps, run.resume))
            if fail:
                raise KeyboardInterrupt
            return {}

        return [Stage("t", "train", fn, reads=("train.steps",))]

    def call(steps: int, fail: bool = False, **kw) -> None:
        speedrun(
            recipe(f"train.steps={steps}"),
            tmp_path,
            stages=stages({"t"} if fail else set()),
            report=False,
            echo=lambda s: None,
            **kw,
        )

    with pytest.raises(KeyboardInterrupt):
        call(5, fail=True)
    call(5)  # same inputs after an interruption: continue from the checkpoint
    with pytest.raises(KeyboardInterrupt):
        call(6, fail=True)  # new inputs: start fresh
    call(7)  # the interrupted attempt had other inputs
    call(7, force=["t"])  # forced: start fresh
    call(7)  # finished: reused, not run
    call(5)  # back to old inputs: stage.json now holds 7's result, so run afresh
    assert seen == [(5, False), (5, True), (6, False), (7, False), (7, False), (5, False)]


def test_failed_stage_still_writes_a_report(tmp_path):
    with pytest.raises(RuntimeError):
        speedrun(recipe(), tmp_path, stages=make_stages([], fail={"c"}), echo=lambda s: None)
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | a | ran |" in md and "| 3 | c | failed |" in md and "| 4 | d | not run |" in md


def test_progress_lines_and_summary_table(tmp_path):
    lines: list[str] = []
    summary = speedrun(recipe(), tmp_path, stages=make_stages([]), report=False, echo=lines.append)
    assert lines[0].startswith(f"llmlab speedrun → {tmp_path}")
    assert re.match(r"\[1/4\] a +running  first  \(at \d+\.\ds\)", lines[1])
    assert re.match(r"\[1/4\] a +done +\d+\.\ds   a ok", lines[2])
    table = summary_table(summary["rows"]).splitlines()
    assert table[0].split() == ["stage", "status", "wall", "key", "numbers"]
    assert table[3].split()[:2] == ["c", "ran"] and table[3].endswith("c ok")
    assert table[-1].startswith("total")


def test_results_are_saved_as_plain_json(tmp_path):
    import numpy as np

    assert to_jsonable(
        {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), 1: Path("x/y"), "d": (True,)}
    ) == {"a": 0.5, "b": [0, 1, 2], "c": None, "1": "x/y", "d": [True]}
    stages = [Stage("n", "numpy", lambda ctx: {"x": np.float64(2.5), "nan": float("inf")})]
    speedrun(recipe(), tmp_path, stages=stages, report=False, echo=lambda s: None)
    assert json.loads((tmp_path / "n" / "stage.json").read_text())["x"] == 2.5


def test_changed_file_contents_rerun_the_stage_that_reads_them(tmp_path):
    calls: list[str] = []
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "a.txt").write_text("one")

    def fn(ctx: StageContext) -> dict:
        calls.append(ctx.recipe.data.source)
        return {}

    stages = [Stage("d", "data", fn, reads=("data.source",), files=("data.source",))]

    def call() -> None:
        speedrun(
            recipe(f"data.source={data}"), tmp_path / "run", stages=stages, report=False, echo=lambda s: None
        )

    call()
    call()
    assert len(calls) == 1  # same path, same contents: reused
    (data / "a.txt").write_text("two")  # same path, same size, new contents
    call()
    assert len(calls) == 2
    (data / "b.txt").write_text("new file")
    call()
    assert len(calls) == 3
