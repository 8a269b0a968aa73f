"""What the training stages share in the speedrun: metrics.jsonl records and the stage dict."""

from __future__ import annotations

from llmlab.train.report import fill_from_metrics, read_metrics


def test_read_metrics_skips_broken_lines(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"no_step": 1}\n{"step": 2, "val_loss": 1.5}\n{"ste')
    assert read_metrics(f) == [{"step": 1, "loss": 2.0}, {"step": 2, "val_loss": 1.5}]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_a_resumed_finished_run_takes_its_eval_numbers_from_metrics(tmp_path):
    m = tmp_path / "metrics.jsonl"
    m.write_text(
        '{"step": 5, "val_loss": 3.0, "val_bpb": 1.5}\n{"step": 10, "loss": 2.0}\n'
        '{"step": 10, "val_loss": 2.5, "val_bpb": 1.25}\n'
    )
    res = {"val_loss": float("nan"), "steps": 10}
    fill_from_metrics(res, m)
    assert res == {"val_loss": 2.5, "val_bpb": 1.25, "steps": 10}
    done = {"val_loss": 9.0}
    fill_from_metrics(done, m)
    assert done == {"val_loss": 9.0}  # a fresh run's own numbers win
