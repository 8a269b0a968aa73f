"""The speedrun orchestration (with stub stages) and the report; one slow end-to-end run."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest

from llmlab.config import load_recipe, to_dict
from llmlab.errors import UserError
from llmlab.eval.report import (
    Code,
    Figure,
    Heading,
    Para,
    Table,
    read_metrics,
    render_html,
    render_markdown,
    write_report,
)
from llmlab.speedrun import Run, Stage, run_stages, speedrun, summary_table

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# Stub stages: each records its calls and writes one output file.
# ---------------------------------------------------------------------------------------------------
def make_stages(calls: list[str], fail: set[str] | None = None) -> list[Stage]:
    fail = fail if fail is not None else set()

    def stub(name: str):
        def fn(run: Run) -> dict:
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
    rows = run_stages(stages, Run(recipe=recipe(), out=tmp_path), echo=lines.append)
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
        def fn(run: Run) -> dict:
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


def test_stage_helpers():
    import numpy as np

    from llmlab.speedrun import _accuracy_by_k, _compression_sample, _jsonable, format_seconds

    docs = [chr(ord("a") + i) * 99 for i in range(10)]  # 10 documents of 99 bytes
    assert _compression_sample(docs, 250).split("\n") == [docs[0], docs[4], docs[8]]  # spans the corpus
    assert _compression_sample(docs, 10**6) == "\n".join(docs)
    assert _accuracy_by_k({"shots": [0, 1, 4], "acc": [0.1, 0.5, 0.75]}) == {"0": 0.1, "1": 0.5, "4": 0.75}
    assert _jsonable(
        {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), 1: Path("x/y"), "d": (True,)}
    ) == {"a": 0.5, "b": [0, 1, 2], "c": None, "1": "x/y", "d": [True]}
    assert [format_seconds(s) for s in (3.24, 61, 3725)] == ["3.2s", "1m01s", "1h02m05s"]


def test_a_resumed_finished_run_takes_its_eval_numbers_from_metrics(tmp_path):
    from llmlab.speedrun import _fill_from_metrics

    m = tmp_path / "metrics.jsonl"
    m.write_text(
        '{"step": 5, "val_loss": 3.0, "val_bpb": 1.5}\n{"step": 10, "loss": 2.0}\n'
        '{"step": 10, "val_loss": 2.5, "val_bpb": 1.25}\n'
    )
    res = {"val_loss": float("nan"), "steps": 10}
    _fill_from_metrics(res, m)
    assert res == {"val_loss": 2.5, "val_bpb": 1.25, "steps": 10}
    done = {"val_loss": 9.0}
    _fill_from_metrics(done, m)
    assert done == {"val_loss": 9.0}  # a fresh run's own numbers win


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------
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
            "metrics": "pretrain/metrics.jsonl",
            "wall_s": 250.0,
        },
        "base_eval": {
            "accuracy": {
                "arith": {"0": 0.1, "1": 0.2, "4": 0.3},
                "capitals": {"0": 0.25, "1": 0.3, "4": 0.2},
            },
            "chance": {"capitals": 0.25},
        },
        "chat_eval": {
            "accuracy": {"arith": {"0": 0.6}, "capitals": {"0": 0.7}},
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


def test_report_numbers_match_the_stage_dicts(tmp_path):
    results = fake_results(tmp_path)
    rows = [{"stage": n, "title": n, "status": "ran", "wall_s": 1.5, "summary": f"{n} ok"} for n in results]
    md_path, html_path = write_report(
        tmp_path, rows, results, machine={"device": "cpu", "torch": "2.x"}, recipe=to_dict(recipe())
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
    assert stages[3] == ["3", "pretrain", "ran", "1.5 s", "12,345,678", "1.800e+14", "pretrain ok"]
    assert stages[-1] == ["", "total", "", f"{1.5 * len(results):.1f} s", "12,345,678", "1.800e+14", ""]
    tok = table_after(md, "## Tokenizer")
    assert float(tok[1][3]) == 3.75 and float(tok[2][3]) == 3.5
    assert "Ours reaches 1.07× GPT-2's compression" in md
    pre = dict(table_after(md, "## Pretraining")[1:])
    assert float(pre["val bits per byte"]) == 1.234 and float(pre["training FLOPs"]) == 1.8e14
    assert int(pre["parameters"].replace(",", "")) == 2_400_000
    icl = table_after(md, "## Base model: in-context learning")
    assert icl[0] == ["task", "k=0", "k=1", "k=4", "chance"]
    assert icl[1] == ["arith", "0.1", "0.2", "0.3", "-"] and icl[2][-1] == "0.25"
    vs = table_after(md, "## Base vs SFT")
    assert vs[0] == ["task", "chance", "base 0-shot", "base best k-shot", "best k", "SFT 0-shot"]
    assert vs[1] == ["arith", "-", "0.1", "0.3", "4", "0.6"] and vs[2] == [
        "capitals",
        "0.25",
        "0.25",
        "0.3",
        "1",
        "0.7",
    ]
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


def test_renderers_escape_their_syntax(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG fake")
    blocks = [
        Heading("T <1>", 1),
        Para("a < b & c"),
        Table(["k", "v"], [["a|b", 0.123456], ["n", None]]),
        Figure(png, "cap"),
        Code("x = '```'\n<tag>"),
    ]
    md = render_markdown(blocks, base=tmp_path)
    assert "| a\\|b | 0.1235 |" in md and "| n | n/a |" in md and "![cap](x.png)" in md
    assert "````\nx = '```'\n<tag>\n````" in md
    page = render_html(blocks, title="t")
    assert "<h1>T &lt;1&gt;</h1>" in page and "<p>a &lt; b &amp; c</p>" in page
    assert "&lt;tag&gt;" in page and base64.b64encode(b"\x89PNG fake").decode() in page


def test_read_metrics_skips_broken_lines(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"no_step": 1}\n{"step": 2, "val_loss": 1.5}\n{"ste')
    assert read_metrics(f) == [{"step": 1, "loss": 2.0}, {"step": 2, "val_loss": 1.5}]
    assert read_metrics(tmp_path / "missing.jsonl") == []


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
    for name in ("data", "tokenizer", "pretrain", "base_eval", "sft", "chat_eval", "samples"):
        assert stages[name][2] == "ran", stages[name]
    # every number in every table parses, and the headline numbers equal the stage dicts
    for table in md_tables(md):
        for row in table[1:]:
            for cell in row:
                if re.fullmatch(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?(e[-+]?\d+)?", cell):
                    assert math.isfinite(float(cell.replace(",", "")))
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
    rec = recipe(f"data.source={src}", *TINY)
    lines: list[str] = []
    summary = speedrun(rec, tmp_path / "run", echo=lines.append, verbose=False)
    status = {r["stage"]: r["status"] for r in summary["rows"]}
    assert status == {
        "data": "ran",
        "tokenizer": "ran",
        "pretrain": "ran",
        "base_eval": "ran",
        "scaling": "off",
        "sft": "ran",
        "chat_eval": "ran",
        "samples": "ran",
    }, lines
    res = summary["results"]
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
