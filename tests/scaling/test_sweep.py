"""Sweeps: the depth rule, IsoFLOP/token planning arithmetic, the CSV reader's one-line errors, and a
tiny end-to-end sweep (3 real pretraining runs of a few steps) that resumes without retraining."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from llmlab.errors import UserError
from llmlab.model import ModelConfig
from llmlab.scaling import load_spec, run_sweep
from llmlab.scaling.sweep import CSV_COLUMNS, read_results
from llmlab.scaling.sweep_plan import SweepSpec, forecast_run, plan_runs, shape_for_depth


def test_depth_rule():
    assert shape_for_depth(3, 32, 32, 8 / 3) == {
        "n_layer": 3,
        "d_model": 96,
        "n_head": 3,
        "n_kv_head": 3,
        "d_ff": 256,
    }
    assert shape_for_depth(1, 20, 16, 4.0)["d_model"] == 32  # rounded up to a multiple of head_dim


def test_isoflop_plan_arithmetic(spec_file):
    spec = load_spec(spec_file, ["sweep.budgets=[1e9, 3e9]", "sweep.min_steps=1"])
    runs, dropped = plan_runs(spec, vocab=300)
    assert len(runs) + len(dropped) == 4
    for r in runs:
        cfg = ModelConfig(vocab_size=300, context=16, **r.shape)
        assert r.params == cfg.num_params(non_embedding=True)
        assert r.tokens == r.steps * 4 * 16 and r.recipe.train.steps == r.steps
        # D = C / 6N up to rounding to whole steps
        assert abs(r.tokens - r.budget / (6 * r.params)) <= 4 * 16 / 2
        assert r.recipe.train.eval_every == r.steps and r.recipe.train.warmup == int(0.1 * r.steps)
    assert [r.budget for r in runs] == sorted(r.budget for r in runs)  # smallest budget first


def test_token_plan_and_forecast_target(spec_file):
    spec = load_spec(spec_file, ["sweep.budgets=[]", "sweep.tokens=[640, 1280]", 'sweep.count="total"'])
    runs, _ = plan_runs(spec, vocab=300)
    assert sorted((r.depth, r.tokens) for r in runs) == [(1, 640), (1, 1280), (2, 640), (2, 1280)]
    assert all(r.params == r.params_total for r in runs)
    target = forecast_run(spec, vocab=300)
    assert target.depth == 1 and target.tokens == 1024


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("sweep.depths=[]", "sweep.depths is empty"),
        ("sweep.tokens=[1e6]", "exactly one of"),
        ('sweep.count="all"', "sweep.count"),
        ("sweep.bogus=1", "unknown recipe key 'sweep.bogus'"),
    ],
)
def test_bad_spec_is_user_error(spec_file, override, match):
    with pytest.raises(UserError, match=match):
        load_spec(spec_file, [override])


def test_read_results_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("params,loss\n1e6,3.0\n")
    with pytest.raises(UserError, match=r"a.csv:1: missing column\(s\) tokens"):
        read_results(p)
    p.write_text("params,tokens,loss\n1e6,2e7,3.0\n2e6,0,2.9\n")
    with pytest.raises(UserError, match=r"a\.csv:3: column tokens: 0 is not positive"):
        read_results(p)
    p.write_text("params,tokens,loss\n1e6,abc,3.0\n")
    with pytest.raises(UserError, match=r"a\.csv:2: column tokens: 'abc' is not a number"):
        read_results(p)
    with pytest.raises(UserError, match="no such CSV"):
        read_results(tmp_path / "missing.csv")
    p.write_text("params,tokens,loss,flops,extra\n1e6,2e7,3.0,1.2e14,x\n")
    data = read_results(p)
    assert data["flops"].tolist() == [1.2e14] and data["budget"] is None and data["params_kind"] == "params"


def test_tiny_sweep_end_to_end_and_resume(spec_file, tmp_path, monkeypatch):
    """Two real pretraining runs (a few steps each, in 2 worker processes) → results.csv; a rerun
    trains nothing and writes the same CSV; a run whose tokenizer is not the sweep's pinned one is
    retrained, in this process, to the same numbers."""
    torch.set_num_threads(1)
    out = tmp_path / "sweep"
    csv_path = run_sweep(spec_file, out, progress=False, overrides=["sweep.workers=2"])
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and list(rows[0]) == CSV_COLUMNS
    for r in rows:
        assert float(r["flops"]) == pytest.approx(6 * float(r["params"]) * float(r["tokens"]))
        assert float(r["params"]) == float(r["params_non_embedding"]) < float(r["params_total"])
        assert 0 < float(r["loss"]) < math.log(300) + 1
        assert (out / r["name"] / "summary.json").is_file()
    data = read_results(csv_path)
    assert data["params_kind"] == "non_embedding" and data["budget"].tolist() == [2e8, 2e8]

    import llmlab.train.pretrain

    def fail(*a, **k):
        raise AssertionError("a finished run was retrained")

    real_pretrain = llmlab.train.pretrain.pretrain
    monkeypatch.setattr(llmlab.train.pretrain, "pretrain", fail)
    (out / "results.csv").unlink()
    run_sweep(spec_file, out, progress=False)
    with open(out / "results.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert again == rows

    pinned = json.loads((out / "tokenizer.json").read_text())
    assert json.loads((out / rows[0]["name"] / "tokenizer.json").read_text()) == pinned
    (out / rows[0]["name"] / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(llmlab.train.pretrain, "pretrain", real_pretrain)
    run_sweep(spec_file, out, progress=False)
    with open(out / "results.csv", newline="") as f:
        third = list(csv.DictReader(f))
    assert third[1] == rows[1]  # reused
    assert float(third[0]["loss"]) == pytest.approx(float(rows[0]["loss"]), rel=1e-6)  # retrained, same seed


def test_spec_dataclass_defaults_are_invalid_until_filled():
    with pytest.raises(UserError):
        from llmlab.scaling.sweep_plan import validate_spec

        validate_spec(SweepSpec())


@pytest.mark.slow
def test_forecast_end_to_end(spec_file, tmp_path):
    """6 tiny runs → approach-3 fit → a prediction written before the held-out run trains → the
    held-out run's measured loss. (Checks the mechanics; 6 runs of a few steps predict nothing.)"""
    from llmlab.scaling import forecast

    torch.set_num_threads(1)
    out = tmp_path / "fc"
    overrides = ["sweep.budgets=[]", "sweep.tokens=[320, 640]", "sweep.depths=[1, 2, 3]"]
    res = forecast(spec_file, out, grid="small", progress=False, overrides=overrides, verbose=False)
    assert res["name"] == "forecast-t1e03-d1" and res["tokens"] == 1024
    summary = json.loads((out / res["name"] / "summary.json").read_text())
    assert res["measured"] == summary["val_loss"]
    assert math.isfinite(res["predicted"]) and res["error"] == pytest.approx(
        res["measured"] - res["predicted"]
    )
    assert res["fit"]["n_points"] == 6 and res["fit"]["N"] == "non_embedding"
    assert json.loads((out / "forecast.json").read_text())["measured"] == res["measured"]
