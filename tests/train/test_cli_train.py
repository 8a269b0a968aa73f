"""`llmlab pretrain` / `llmlab sft`: bad recipe values and unusable devices are one line and exit 2
before any work starts; `train.eval_every = 0` evaluates only at the end (as `sft.eval_every = 0`)."""

from __future__ import annotations

import json

import pytest
import torch

import llmlab.cli

TINY = [
    "data.vocab_size=300",
    *("model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64"),
    *("model.context=32", "train.steps=6", "train.batch_size=4", "train.eval_batches=2"),
]


def run_cli(*argv: str) -> int:
    return llmlab.cli.main(list(argv))


def pretrain_cli(tmp_path, corpus, *extra: str) -> int:
    overrides = [f"data.source={json.dumps(str(corpus))}", *TINY, *extra]
    return run_cli(
        "pretrain", "--recipe", "/dev/null", "--no-sample", "--quiet", "--out", str(tmp_path / "o"),
        *(x for kv in overrides for x in ("--set", kv)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.log_every=0", "recipe key train.log_every: must be >= 1, got 0"),
        ("train.eval_every=-1", "recipe key train.eval_every: must be >= 0 (0 = only at the end), got -1"),
        ("train.lr=-1", "recipe key train.lr: must be > 0, got -1.0"),
        ("train.warmup=-5", "recipe key train.warmup: must be >= 0, got -5"),
        ("train.device=foo", "recipe key train.device: must be one of auto, cpu, cuda, mps, got 'foo'"),
    ],
)
def test_bad_train_key_is_one_line_exit_2(tmp_path, corpus, capsys, override, message):
    assert pretrain_cli(tmp_path, corpus, override) == 2
    assert capsys.readouterr().err == f"llmlab: {message}\n"


def test_device_cuda_without_cuda_is_one_line_exit_2(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pretrain_cli(tmp_path, corpus, "train.device=cuda") == 2
    assert capsys.readouterr().err == (
        "llmlab: train.device=cuda: no CUDA device is available here; use auto or cpu\n"
    )


def test_device_mps_without_mps_is_one_line_exit_2(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pretrain_cli(tmp_path, corpus, "train.device=mps") == 2
    assert "train.device=mps: no MPS (Apple GPU) device is available here" in capsys.readouterr().err


def test_eval_every_zero_evaluates_only_at_the_end(tmp_path, corpus):
    torch.set_num_threads(1)
    assert pretrain_cli(tmp_path, corpus, "train.eval_every=0", "train.steps=4") == 0
    records = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [4]


def test_sft_batch_size_zero_is_one_line_exit_2(tmp_path, capsys):
    argv = ["sft", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "sft.batch_size=0"]
    assert run_cli(*argv) == 2
    assert capsys.readouterr().err == "llmlab: recipe key sft.batch_size: must be >= 1, got 0\n"
