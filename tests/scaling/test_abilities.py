"""Abilities across scale: a two-model toy sweep (a few training steps each) scored on held-out ICL
tasks with both metrics, the continuous one against a plain forward written here, the answer-loss
power law and its forecast, the plots, and the one-line errors (exit code 2)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

import llmlab
import llmlab.cli
from llmlab.errors import UserError
from llmlab.scaling import run_sweep
from llmlab.scaling.abilities import abilities, fit_task

TOY = ["sweep.budgets=[]", "sweep.tokens=[1280]", "model.context=64"]  # depths 1, 2: two models


@pytest.fixture
def toy_sweep(spec_file, tmp_path):
    """Two finished runs, plus a copy of the larger one posing as the held-out forecast run at twice
    its compute (forecast.json as `forecast` writes it)."""
    torch.set_num_threads(1)
    out = tmp_path / "sweep"
    run_sweep(spec_file, out, progress=False, overrides=TOY)
    big = max(out.glob("t*-d*"), key=lambda p: p.name)
    shutil.copytree(big, out / "heldout")
    summary = json.loads((big / "summary.json").read_text())
    row = next(r for r in (out / "results.csv").read_text().splitlines() if r.startswith(big.name))
    params = float(row.split(",")[1])
    flops = 2 * 6.0 * params * summary["train_tokens"]
    (out / "forecast.json").write_text(
        json.dumps(
            {"name": "heldout", "params": params, "tokens": 2 * summary["train_tokens"], "flops": flops}
        )
    )
    return out


def hand_logp(model, tok, task, i: int, k: int) -> tuple[float, int]:
    """Σ log p(answer tokens | k-shot prompt) for test item i by one plain float64 forward."""
    from llmlab.eval.icl import pick_shots
    from llmlab.tokenizer.chat import BOS

    shots = pick_shots(task, i, k)
    text = "".join(f"Q: {ex.prompt}\nA: {ex.answer}\n\n" for ex in shots) + f"Q: {task.test[i].prompt}\nA:"
    prompt = [tok.special_tokens[BOS], *tok.encode_ordinary(text)]
    answer = tok.encode_ordinary(" " + task.test[i].answer + "\n")
    assert len(prompt) + len(answer) <= model.cfg.context  # nothing dropped: the plain prompt
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + answer])).double(), dim=-1)[0]
    return sum(float(logp[len(prompt) - 1 + j, a]) for j, a in enumerate(answer)), len(answer)


def test_table_metrics_fit_forecast_and_plots(toy_sweep, tmp_path):
    from llmlab.eval.tasks import get_task

    res = abilities(toy_sweep, ["arithmetic", "capitals"], shots=[0, 1], limit=4, out_dir=tmp_path / "ab")
    rows = res["rows"]
    keys = {(r["model"], r["task"], r["k"]) for r in rows}
    assert len(rows) == len(keys) == 3 * 2 * 2  # (model, task, k), the held-out run included
    assert [r["flops"] for r in rows] == sorted(r["flops"] for r in rows)  # smallest compute first
    for r in rows:
        assert 0 <= r["acc"] <= 1 and r["logp"] < 0 and r["answer_loss"] > 0 and r["n"] == 4
    task = get_task("arithmetic")
    for r in (r for r in rows if r["task"] == "arithmetic" and r["k"] == 1):
        model, tok = llmlab.load(toy_sweep / r["model"])
        scored = [hand_logp(model, tok, task, i, 1) for i in range(4)]
        assert r["logp"] == pytest.approx(np.mean([s for s, _ in scored]), rel=1e-5)
        assert r["p_answer"] == pytest.approx(np.mean([math.exp(s) for s, _ in scored]), rel=1e-4)
        assert r["answer_loss"] == pytest.approx(
            -sum(s for s, _ in scored) / sum(n for _, n in scored), rel=1e-5
        )

    # the power law through the two sweep runs, and its forecast at the held-out run's compute
    fit = next(f for f in res["fits"] if f["task"] == "arithmetic" and f["k"] == 1)
    (c1, l1), (c2, l2) = [
        (r["flops"], r["answer_loss"]) for r in rows if r["task"] == "arithmetic" and r["k"] == 1
    ][:2]
    assert fit["alpha"] == pytest.approx(-math.log(l2 / l1) / math.log(c2 / c1), rel=1e-6)
    fc = fit["forecast"]
    held = next(r for r in rows if r["heldout"] and r["task"] == "arithmetic" and r["k"] == 1)
    assert fc["model"] == "heldout" and fc["measured_loss"] == held["answer_loss"]
    assert fc["predicted_loss"] == pytest.approx(l2 * (fc["flops"] / c2) ** -fit["alpha"], rel=1e-6)
    assert fc["predicted_acc"] == pytest.approx(math.exp(-fc["predicted_loss"] * held["answer_tokens"]))
    mc = next(f for f in res["fits"] if f["task"] == "capitals")["forecast"]
    assert mc["predicted_acc"] is None  # no p^ℓ link for a multiple-choice argmax

    assert sorted(p.name for p in res["plots"]) == ["abilities_arithmetic.png", "abilities_capitals.png"]
    for p in res["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(res["json"].read_text())["rows"] == json.loads(json.dumps(rows))


def test_fit_takes_the_best_run_of_each_budget():
    """L = 3·C^-0.1 on the best run of three budgets; a worse run at each budget is ignored."""

    def row(c, loss, heldout=False):
        return {"task": "t", "k": 0, "model": f"m{c:g}", "flops": c, "answer_loss": loss, "heldout": heldout}

    law = lambda c: 3.0 * c**-0.1  # noqa: E731
    rows = [row(c, law(c) * f) for c in (1e10, 1e11, 1e12) for f in (1.0, 1.3)]
    held = {**row(1e13, 1.0, heldout=True), "kind": "gen", "answer_tokens": 2.0, "acc": 0.0, "p_answer": 0.1}
    fit = fit_task([*rows, held])
    assert fit["alpha"] == pytest.approx(0.1) and fit["A"] == pytest.approx(3.0) and fit["points"] == 3
    assert fit["forecast"]["predicted_loss"] == pytest.approx(law(1e13))
    assert fit["forecast"]["rel_error"] == pytest.approx(1 - law(1e13))
    assert fit["forecast"]["predicted_acc"] == pytest.approx(math.exp(-2.0 * law(1e13)))
    assert "why" in fit_task([row(1e10, 2.0), row(1.05e10, 1.9)])  # one budget: no power law
    assert "why" in fit_task([held])  # the held-out run alone


def run_cli(capsys, *args):
    rc = llmlab.cli.main(["scaling", "abilities", *args])
    return rc, *capsys.readouterr()


def test_cli_json_on_the_toy_sweep(capsys, toy_sweep, tmp_path):
    rc, out, _ = run_cli(
        capsys, "--sweep", str(toy_sweep), "--tasks", "capitals", "--shots", "0", "--limit", "2",
        "--device", "cpu", "--out", str(tmp_path / "cli"), "--json",
    )  # fmt: skip
    assert rc == 0
    res = json.loads(out)
    assert [(r["model"], r["task"], r["k"]) for r in res["rows"]][-1] == ("heldout", "capitals", 0)
    assert len(res["rows"]) == 3 and {"acc", "logp", "answer_loss"} <= set(res["rows"][0])
    assert (tmp_path / "cli" / "abilities_capitals.png").is_file()
    rc, out, _ = run_cli(
        capsys, "--sweep", str(toy_sweep), "--tasks", "capitals", "--shots", "0", "--limit", "2"
    )
    assert rc == 0 and "held-out run: predicted" in out and "exact match predicted" not in out  # mc


def test_bad_input_is_one_line(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "results.csv").write_text("name,params,tokens,loss\nt1-d1,1000,2000,3.0\n")
    for folder in (empty, tmp_path / "unfinished"):
        rc, out, err = run_cli(capsys, "--sweep", str(folder))
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert f"--sweep {folder}: no finished runs" in err
    rc, _, err = run_cli(capsys, "--sweep", str(tmp_path / "missing"))
    assert rc == 2 and "no such folder" in err
    rc, _, err = run_cli(capsys, "--sweep", str(empty), "--tasks", "arithmetic", "nope")
    assert rc == 2 and err.count("\n") == 1 and "unknown task 'nope'" in err
    with pytest.raises(UserError, match="unknown task"):
        abilities(empty, ["nope"])


def test_answers_longer_than_a_tiny_context_are_scored_not_a_crash():
    """On a 16-token context, `format` answers need more new tokens than fit: greedy decoding keeps
    one prompt token (and is wrong), the answer log-prob keeps the first context − 1 answer tokens."""
    from llmlab.eval.icl import answer_logprobs, evaluate
    from llmlab.eval.tasks import get_task
    from llmlab.model import ModelConfig, Transformer
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train(["the king of the night is fair. " * 20], 270)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=270, n_layer=1, d_model=16, n_head=1, n_kv_head=1, d_ff=32, context=16)
    model = Transformer(cfg)
    task = get_task("format")
    assert max(len(tok.encode_ordinary(ex.answer)) for ex in task.test[:2]) + 4 > cfg.context
    assert evaluate(model, tok, task, shots=[0], limit=2)["acc"] == [0.0]
    assert [n for _, n in answer_logprobs(model, tok, task, 0, n=2)] == [
        min(len(tok.encode_ordinary(" " + ex.answer + "\n")), 15) for ex in task.test[:2]
    ]
