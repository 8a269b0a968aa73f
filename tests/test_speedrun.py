"""The speedrun's stages (`llmlab.speedrun.STAGES`): their report sections and one-screen summary on
fixed stage dicts, the real stages end to end on a tiny corpus (seconds), the scaling stage on a tiny
sweep, and the full tiny recipe (make test-slow)."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest

from llmlab.config import load_recipe, to_dict
from llmlab.errors import UserError
from llmlab.pipeline import Stage
from llmlab.report.build import write_report
from llmlab.speedrun import STAGES, speedrun

ROOT = Path(__file__).resolve().parents[1]


def recipe(*overrides: str):
    return load_recipe(None, list(overrides))


def test_stage_table_and_helpers():
    from llmlab.eval.icl_stage import accuracy_by_k
    from llmlab.tokenizer.stage import compression_sample

    assert [s.name for s in STAGES] == [
        "data",
        "tokenizer",
        "pretrain",
        "base_eval",
        "scaling",
        "midtrain",
        "sft",
        "chat_eval",
        "tool_eval",
        *("reward", "dpo", "rlhf", "grpo", "aligned_eval", "frontier"),  # llmlab.align.stages
        "index",
        "rag_eval",
        "copy_eval",
        "agent_eval",
        "targets",
        "samples",
    ]
    names = [s.name for s in STAGES]
    for s in STAGES:  # a stage needs only stages before it
        assert all(names.index(n) < names.index(s.name) for n in (*s.needs, *s.uses)), s.name
        assert s.section is not None and s.headline is not None, s.name
    docs = [chr(ord("a") + i) * 99 for i in range(10)]  # 10 documents of 99 bytes
    assert compression_sample(docs, 250).split("\n") == [docs[0], docs[4], docs[8]]  # spans the corpus
    assert compression_sample(docs, 10**6) == "\n".join(docs)
    assert accuracy_by_k({"shots": [0, 1, 4], "acc": [0.1, 0.5, 0.75]}) == {"0": 0.1, "1": 0.5, "4": 0.75}


def md_tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells (header first, separator dropped)."""
    tables, cur = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(---\|)+", line):
                cur.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def table_after(md: str, heading: str) -> list[list[str]]:
    return md_tables(md.split(heading, 1)[1])[0]


def fake_results(tmp_path: Path) -> dict:
    (tmp_path / "pretrain").mkdir()
    lines = [{"step": s, "loss": 8 - math.log1p(s), "lr": 1e-3} for s in range(0, 200, 5)]
    lines += [{"step": s, "val_loss": 8.2 - math.log1p(s)} for s in (0, 100, 199)]
    (tmp_path / "pretrain" / "metrics.jsonl").write_text(
        "\n".join(json.dumps(x) for x in lines) + "\n{broken"
    )
    return {
        "data": {"source": "shakespeare", "documents": 42, "bytes": 5_000_000},
        "tokenizer": {
            "trained": True,
            "vocab_size": 4096,
            "pattern": "gpt4",
            "n_merges": 4086,
            "sample_bytes": 1000,
            "bytes_per_token": 3.75,
            "gpt2_bytes_per_token": 3.5,
            "gpt2_vocab_size": 50257,
        },
        "pretrain": {
            "params": 2_400_000,
            "non_embedding_params": 1_600_000,
            "train_tokens": 12_345_678,
            "tokens": 12_345_678,
            "flops": 1.8e14,
            "val_loss": 3.21,
            "val_bpb": 1.234,
            "unigram_bpb": 2.5,
            "metrics": "pretrain/metrics.jsonl",
            "wall_s": 250.0,
        },
        "base_eval": {
            "accuracy": {
                "arith": {"0": 0.1, "1": 0.2, "4": 0.3},
                "capitals": {"0": 0.25, "1": 0.3, "4": 0.2},
            },
            "chance": {"capitals": 0.25},
            "heldout": {"arith": "unseen answers", "capitals": "new wording of trained facts"},
        },
        "chat_eval": {
            "accuracy": {"arith": {"0": 0.6}, "capitals": {"0": 0.7}},
            "heldout": {"arith": "unseen answers", "capitals": "new wording of trained facts"},
            "tasks": {"arith": {"examples": [{"prompt": "2+2?", "answer": "4", "prediction": "4"}]}},
        },
        "samples": {
            "settings": {"temperature": 0.8},
            "base": [{"prompt": "ROMEO:", "completion": " O | love"}],
            "chat": [{"user": "2+2?", "assistant": "4"}],
        },
        "scaling": {
            "runs": 6,
            "spec": "mini.toml",
            "fit": {
                "E": 1.5,
                "A": 400.0,
                "B": 900.0,
                "alpha": 0.34,
                "beta": 0.28,
                "a_opt": 0.45,
                "b_opt": 0.55,
                "N": "non_embedding",
            },
            "forecast": {
                "name": "big",
                "params": 1000,
                "tokens": 5000,
                "flops": 3e7,
                "predicted": 3.0,
                "measured": 3.3,
                "rel_error": 0.3 / 3.3,
            },
        },
        "future_stage": {"reward_margin": 0.5, "note": "hello"},
    }


def assert_every_number_present(md: str) -> None:
    """A finished run's report has no n/a, nan or inf in any table (a missing number is a bug), and every
    numeric-looking cell parses to a finite number."""
    for table in md_tables(md):
        for row in table[1:]:
            for cell in row:
                assert cell not in ("n/a", "nan", "inf", "None"), (table[0], row)
                assert not re.search(r"\b(nan|inf|None)\b", cell), (table[0], row)
                if re.fullmatch(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?(e[-+]?\d+)?", cell):
                    assert math.isfinite(float(cell.replace(",", "")))


def test_report_numbers_match_the_stage_dicts(tmp_path):
    results = fake_results(tmp_path)
    stages = [*STAGES, Stage("future_stage", "a stage with no section yet", lambda ctx: {})]
    by_name = {s.name: s for s in stages}
    stages = [by_name[n] for n in results]
    rows = [{"stage": n, "title": n, "status": "ran", "wall_s": 1.5, "summary": f"{n} ok"} for n in results]
    md_path, html_path = write_report(
        tmp_path, stages, rows, results, machine={"device": "cpu", "torch": "2.x"}, recipe=to_dict(recipe())
    )
    md = md_path.read_text()
    assert md.startswith("# llmlab speedrun report")
    stages = table_after(md, "## Stages")
    assert stages[0] == [
        "#",
        "stage",
        "status",
        "wall time",
        "training tokens",
        "training FLOPs",
        "key numbers",
    ]
    assert stages[3] == ["3", "pretrain", "ran", "1.5s", "12,345,678", "1.800e+14", "pretrain ok"]
    assert stages[-1] == ["", "total", "", f"{1.5 * len(results):.1f}s", "12,345,678", "1.800e+14", ""]
    tok = table_after(md, "## Tokenizer")
    assert float(tok[1][3]) == 3.75 and float(tok[2][3]) == 3.5
    assert "Ours reaches 1.07× GPT-2's compression" in md
    pre = dict(table_after(md, "## Pretraining")[1:])
    assert float(pre["val bits per byte"]) == 1.234 and float(pre["training FLOPs"]) == 1.8e14
    assert int(pre["parameters"].replace(",", "")) == 2_400_000
    icl = table_after(md, "## Base model: in-context learning")
    assert icl[0] == ["task", "held out", "k=0", "k=1", "k=4", "chance"]
    assert icl[1] == ["arith", "unseen answers", "0.1", "0.2", "0.3", "-"] and icl[2][-1] == "0.25"
    vs = table_after(md, "## Base vs SFT")
    assert vs[0] == ["task", "held out", "chance", "base 0-shot", "base best k-shot", "best k", "SFT 0-shot"]
    assert vs[1] == ["arith", "unseen answers", "-", "0.1", "0.3", "4", "0.6"]
    assert vs[2] == ["capitals", "new wording of trained facts", "0.25", "0.25", "0.3", "1", "0.7"]
    # the one-screen summary opens the report: each stage's key number beside what it compares with
    assert (
        md.index("## Summary") < md.index("## Stages") < md.index("## Pretraining") < md.index("## Machine")
    )
    head = table_after(md, "## Summary")
    assert head[0] == ["stage", "result", "value", "compared with"]
    lines = {(r[0], r[1]): r[2:] for r in head[1:]}
    assert lines["tokenizer", "compression (bytes/token, held out)"] == [
        "3.75",
        "GPT-2 3.50 with 50,257 tokens",
    ]
    assert lines["pretrain", "validation bits per byte"] == ["1.234", "unigram baseline 2.500"]
    assert lines["chat_eval", "SFT 0-shot accuracy, 1 task (unseen answers)"] == [
        "0.600",
        "base model best k-shot 0.300",
    ]
    assert lines["chat_eval", "SFT 0-shot accuracy, 1 task (new wording of trained facts)"] == [
        "0.700",
        "base model best k-shot 0.300",
    ]
    assert lines["scaling", "forecast of the held-out run's loss"] == ["3.000", "measured 3.300"]
    assert lines["future_stage", "future_stage ok"] == ["", ""]  # no headline yet: its summary line
    assert table_after(md, "### SFT model answers")[1] == ["arith", "2+2?", "4", "4"]
    assert "ROMEO: O | love" in md  # code blocks keep pipes verbatim
    assert dict(table_after(md, "## future_stage")[1:]) == {"reward_margin": "0.5", "note": "hello"}
    fit, fc = md_tables(md.split("## Scaling mini-sweep", 1)[1])[:2]
    assert [float(x) for x in fit[1]] == [1.5, 400.0, 900.0, 0.34, 0.28, 0.45, 0.55]
    assert fc[1] == ["big", "1,000", "5,000", "3.000e+07", "3", "3.3", "+9.09%"]
    assert "[speedrun]" in md  # the resolved recipe closes the report
    for png in ("loss_pretrain.png", "icl.png", "base_vs_sft.png"):
        assert f"](report/{png})" in md
        assert (tmp_path / "report" / png).read_bytes().startswith(b"\x89PNG")
    page = html_path.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 3 and all(base64.b64decode(e).startswith(b"\x89PNG") for e in embedded)
    assert "report/" not in page.split("<body>", 1)[1].replace("speedrun report", "")  # no file links
    assert "<td>12,345,678</td>" in page


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from llmlab.cli import main

    assert main(["speedrun", "--recipe", str(tmp_path / "nope.toml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"llmlab: {tmp_path / 'nope.toml'}: no such recipe file"]
    assert (
        main(
            [
                "speedrun",
                "--recipe",
                str(ROOT / "recipes" / "tiny-speedrun.toml"),
                "--out",
                str(tmp_path),
                "--force",
                "nope",
            ]
        )
        == 2
    )
    assert "unknown speedrun stage 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "speedrun",
                "--recipe",
                str(ROOT / "recipes" / "tiny-speedrun.toml"),
                "--out",
                str(tmp_path),
                "--set",
                "speedrun.bogus=1",
            ]
        )
        == 2
    )
    assert "unknown recipe key 'speedrun.bogus'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# End to end (make test-slow): the real stages on a tiny recipe
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_speedrun_end_to_end(tmp_path):
    from llmlab.cli import main

    out = tmp_path / "run"
    args = ["speedrun", "--recipe", str(ROOT / "recipes" / "tiny-speedrun.toml"), "--out", str(out)]
    assert main(args) == 0
    md = (out / "report.md").read_text()
    stages = {row[1]: row for row in table_after(md, "## Stages")[1:]}
    every = ("data", "tokenizer", "pretrain", "base_eval", "midtrain", "sft", "chat_eval", "tool_eval")
    every += ("reward", "dpo", "rlhf", "grpo", "aligned_eval", "index", "rag_eval", "copy_eval")
    for name in (*every, "agent_eval", "targets", "samples"):
        assert stages[name][2] == "ran", stages[name]
    targets = json.loads((out / "summary.json").read_text())["targets"]
    assert {"arithmetic_tool", "unseen_facts", "copy", "agent"} <= set(targets)
    # no table of a finished run has a missing or non-finite number, and the headline numbers equal the stage dicts
    assert_every_number_present(md)
    saved = json.loads((out / "pretrain" / "stage.json").read_text())
    pre = dict(table_after(md, "## Pretraining")[1:])
    assert float(pre["val bits per byte"]) == pytest.approx(saved["val_bpb"], rel=1e-3)
    assert int(pre["parameters"].replace(",", "")) == saved["params"]
    assert 0 < saved["val_bpb"] < 8
    tok = json.loads((out / "tokenizer" / "stage.json").read_text())
    assert float(table_after(md, "## Tokenizer")[1][3]) == pytest.approx(tok["bytes_per_token"], rel=1e-3)
    vs = table_after(md, "## Base vs SFT")
    assert len(vs) > 1 and all(0 <= float(r[5]) <= 1 for r in vs[1:])
    assert len(re.findall(r"data:image/png;base64,", (out / "report.html").read_text())) >= 3
    # a second call reuses everything
    assert main([*args, "--json"]) == 0
    assert all(
        r["status"] in ("cached", "off") for r in json.loads((out / "summary.json").read_text())["rows"]
    )


# ---------------------------------------------------------------------------------------------------
# The real stages, end to end on a tiny local corpus (seconds; no network)
# ---------------------------------------------------------------------------------------------------
TINY = [
    "data.vocab_size=300",
    "model.n_layer=1",
    "model.d_model=32",
    "model.n_head=2",
    "model.n_kv_head=1",
    "model.d_ff=64",
    "model.context=32",
    "train.steps=4",
    "train.batch_size=4",
    "train.warmup=1",
    "train.eval_every=4",
    "train.eval_batches=1",
    "train.save_every=4",
    "train.log_every=2",
    "sft.steps=3",
    "sft.batch_size=4",
    'speedrun.eval_tasks=["arithmetic", "capitals"]',
    "speedrun.shots=[0, 1]",
    "speedrun.eval_limit=3",
    "speedrun.compression_bytes=2000",
    'speedrun.base_prompts=["The"]',
    'speedrun.chat_prompts=["Work out 1 + 2."]',
    "speedrun.max_new_tokens=5",
    *("reward.steps=2", "dpo.steps=2", "rlhf.steps=1", "rlhf.batch_size=2", "rlhf.max_new_tokens=3"),
    *("grpo.steps=1", "grpo.k=2", "grpo.batch_size=2", "grpo.max_new_tokens=3", "align.eval_limit=3"),
]


def test_real_stages_on_a_tiny_corpus(tmp_path, monkeypatch):
    import torch

    from llmlab.data import corpus

    def offline(name, *args, **kw):
        raise UserError(f"{name}: offline in this test")

    monkeypatch.setattr(corpus, "fetch", offline)  # no GPT-2 ranks download
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))  # token shards cached here
    torch.set_num_threads(1)
    src = tmp_path / "corpus"
    src.mkdir()
    text = "the king and the queen walk to the river while a fool sings of love and of war"
    words = text.split()
    for d in range(4):
        lines = [" ".join(words[(d + i + j) % len(words)] for j in range(9)) + "." for i in range(60)]
        (src / f"doc{d}.txt").write_text("\n".join(lines) + "\n")
    mid = ["midtrain.enabled=true", "midtrain.steps=2", "midtrain.batch_size=2", "midtrain.conversations=40"]
    rec = recipe(f"data.source={src}", *TINY, *mid, "data.tokenizer_sample=20")
    lines: list[str] = []
    summary = speedrun(rec, tmp_path / "run", echo=lines.append, verbose=False)
    status = {r["stage"]: r["status"] for r in summary["rows"]}
    assert status == {
        "data": "ran",
        "tokenizer": "ran",
        "pretrain": "ran",
        "base_eval": "ran",
        "scaling": "off",
        "midtrain": "ran",
        "sft": "ran",
        "chat_eval": "ran",
        "tool_eval": "ran",
        "index": "ran",
        "rag_eval": "ran",
        "copy_eval": "ran",
        "agent_eval": "ran",
        "targets": "ran",
        "samples": "ran",
        **dict.fromkeys(("reward", "dpo", "rlhf", "grpo", "aligned_eval"), "ran"),
        "frontier": "off",
    }, lines
    res = summary["results"]
    assert set(summary["targets"]) >= {"arithmetic_tool", "unseen_facts", "copy", "agent"}
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["targets"]
    assert saved == summary["targets"]
    assert all({"without", "with"} <= set(t) <= {"without", "with", "signals"} for t in saved.values())
    assert res["sft"]["outputs"] and "midtrain" in res and res["midtrain"]["steps"] == 2
    assert res["data"]["documents"] == 4
    assert res["tokenizer"]["vocab_size"] == 300 and res["tokenizer"]["gpt2_bytes_per_token"] is None
    assert "offline in this test" in res["tokenizer"]["gpt2_note"]
    assert res["pretrain"]["train_tokens"] == 4 * 4 * 32 and math.isfinite(res["pretrain"]["val_bpb"])
    assert set(res["base_eval"]["accuracy"]) == {"arithmetic", "capitals"}
    assert (
        set(res["base_eval"]["accuracy"]["capitals"]) == {"0", "1"}
        and "capitals" in res["base_eval"]["chance"]
    )
    assert set(res["chat_eval"]["accuracy"]["arithmetic"]) == {"0"}
    assert (
        res["samples"]["base"][0]["prompt"] == "The"
        and res["samples"]["chat"][0]["user"] == "Work out 1 + 2."
    )
    md = (tmp_path / "run" / "report.md").read_text()
    assert_every_number_present(
        md.split("## Tokenizer", 1)[1].split("## Samples", 1)[0]
    )  # GPT-2 offline here
    pre = dict(table_after(md, "## Pretraining")[1:])
    assert float(pre["val bits per byte"]) == pytest.approx(res["pretrain"]["val_bpb"], rel=1e-3)
    # a second call reuses every stage; a changed sampling setting reruns only the samples
    again = speedrun(rec, tmp_path / "run", echo=lambda s: None, verbose=False)
    assert {r["status"] for r in again["rows"]} == {"cached", "off"}
    from llmlab.cli import main  # the saved resolved recipe reproduces the run: everything is reused

    run_dir = tmp_path / "run"
    assert main(["speedrun", "--recipe", str(run_dir / "recipe.toml"), "--out", str(run_dir), "--json"]) == 0
    assert {r["status"] for r in json.loads((run_dir / "summary.json").read_text())["rows"]} == {
        "cached",
        "off",
    }
    # same seed on CPU, same numbers: a fresh run folder reproduces every stage's result
    fresh = speedrun(rec, tmp_path / "run2", echo=lambda s: None, verbose=False, report=False)["results"]
    drop = {
        "wall_s",
        "train_wall_s",
        "run_id",
        "fingerprint",
        "finished_at",
        "tokens_per_s",
        "mfu",
        "out_dir",
        "metrics",
        "summary",
    }
    for name in ("tokenizer", "base_eval", "chat_eval", "samples"):
        assert {k: v for k, v in fresh[name].items() if k not in drop} == {
            k: v for k, v in res[name].items() if k not in drop
        }, name
    for key in ("val_loss", "val_bpb", "loss"):
        assert fresh["pretrain"][key] == res["pretrain"][key] and fresh["sft"][key] == res["sft"][key]
    rec.speedrun.temperature = 0.0
    third = speedrun(rec, tmp_path / "run", echo=lambda s: None, verbose=False)
    assert [r["stage"] for r in third["rows"] if r["status"] == "ran"] == ["samples"]


def test_scaling_stage_on_a_tiny_sweep(spec_file, tmp_path):
    """`--set speedrun.scaling=true` end to end: 6 runs of a few steps, the fit, the forecast, the section."""
    import torch

    from llmlab.scaling.stage import SCALING

    torch.set_num_threads(1)
    spec = spec_file  # a token sweep: 3 depths × 2 token budgets, and the forecast run
    spec.write_text(
        spec.read_text()
        .replace("budgets = [2e8]", "tokens = [320, 640]")
        .replace("depths = [1, 2]", "depths = [1, 2, 3]")
    )
    abilities = (
        'speedrun.eval_tasks=["arithmetic", "capitals"]',
        "speedrun.eval_limit=4",
        "speedrun.shots=[0]",
    )
    rec = recipe("speedrun.scaling=true", f"speedrun.scaling_spec={spec}", *abilities)
    summary = speedrun(rec, tmp_path / "run", stages=[SCALING], echo=lambda s: None, verbose=False)
    res = summary["results"]["scaling"]
    assert summary["rows"][0]["status"] == "ran" and res["runs"] == 6
    assert {"E", "A", "B", "alpha", "beta"} <= set(res["fit"])
    assert res["forecast"]["tokens"] == 1024 and math.isfinite(res["forecast"]["measured"])
    from llmlab.scaling.sweep import read_results

    data = read_results(tmp_path / "run" / res["csv"])
    assert res["optimal_at_100x"]["flops"] == pytest.approx(100 * float(data["flops"].max()))
    md = (tmp_path / "run" / "report.md").read_text()
    fc = md_tables(md.split("## Scaling mini-sweep", 1)[1])[2]
    assert fc[1][0] == res["forecast"]["name"] and float(fc[1][5]) == pytest.approx(
        res["forecast"]["measured"], rel=1e-3
    )
    ab = md_tables(md.split("### Abilities across scale", 1)[1])  # 7 models, 2 tasks, k = 0
    assert len(res["abilities"]["rows"]) == 7 * 2 and [r[:2] for r in ab[0][1:]] == [
        ["arithmetic", "0"],
        ["capitals", "0"],
    ]
    assert ab[1][1][0] == "arithmetic" and len(res["abilities"]["plots"]) == 2
    spec.write_text(
        spec.read_text().replace("lr = 3e-3", "lr = 2e-3")
    )  # an edited spec file reruns the stage
    again = speedrun(
        rec, tmp_path / "run", stages=[SCALING], echo=lambda s: None, verbose=False, report=False
    )
    assert again["rows"][0]["status"] == "ran"
