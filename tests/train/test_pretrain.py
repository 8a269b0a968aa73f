"""`pretrain` end to end on a tiny corpus, and the CLI's one-line errors (exit code 2)."""

import json
import math

import pytest
import torch

import llmlab
import llmlab.cli
from llmlab.config import load_recipe
from llmlab.train.pretrain import pretrain

TINY = [
    "data.vocab_size=300",
    "model.n_layer=1",
    "model.d_model=32",
    "model.n_head=2",
    "model.n_kv_head=1",
    "model.d_ff=64",
    "model.context=32",
    "train.steps=6",
    "train.batch_size=4",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.save_every=3",
    "train.log_every=1",
    "train.warmup=2",
]


def recipe(corpus, *extra):
    return load_recipe(None, [f"data.source={json.dumps(str(corpus))}", *TINY, *extra])


def test_pretrain_writes_a_loadable_model_directory(corpus, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    s = pretrain(recipe(corpus), out, verbose=False)
    for key in (
        "val_loss",
        "val_bpb",
        "train_tokens",
        "params",
        "non_embedding_params",
        "flops",
        "wall_s",
        "unigram_bpb",
        "sample",
    ):
        assert key in s, key
    assert s["train_tokens"] == 6 * 4 * 32 and isinstance(s["sample"], str)
    assert s["val_loss"] < math.log(s["vocab_size"])  # learned something beyond the uniform guess
    for f in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_state.pt",
        "metrics.jsonl",
        "recipe.toml",
        "summary.json",
    ):
        assert (out / f).is_file(), f
    model, tok = llmlab.load(out)
    assert model.cfg.vocab_size == tok.vocab_size and model.num_params() == s["params"]
    # --resume after the end is a no-op that keeps the same result.
    again = pretrain(recipe(corpus), out, resume=True, verbose=False, sample=False)
    assert again["train_tokens"] == s["train_tokens"] and again["val_loss"] == s["val_loss"]


def test_the_first_induction_steps_train_on_span_pair_rows_of_as_many_tokens(corpus, tmp_path, monkeypatch):
    import llmlab.data.induction as induction

    torch.set_num_threads(1)
    calls = []

    def spy(context, batch_size, n_ids, **kw):
        x, y = real(context, batch_size, n_ids, **kw)
        calls.append((kw["step"], tuple(x.shape), n_ids))
        return x, y

    real = induction.induction_batch
    monkeypatch.setattr(induction, "induction_batch", spy)
    r = recipe(corpus, "data.induction_steps=2", "data.induction_context=8")
    s = pretrain(r, tmp_path / "run", verbose=False, sample=False)
    _, tok = llmlab.load(tmp_path / "run")
    # steps 0 and 1 (and no later step): 4 rows × 32 tokens become 16 rows of 8; no special token id
    assert calls == [
        (0, (16, 8), min(tok.special_tokens.values())),
        (1, (16, 8), min(tok.special_tokens.values())),
    ]
    assert s["train_tokens"] == 6 * 4 * 32
    # a list of row lengths is taken in turn, step by step
    calls.clear()
    r = recipe(corpus, "data.induction_steps=3", "data.induction_context=[8, 16]")
    pretrain(r, tmp_path / "cycled", verbose=False, sample=False)
    assert [c[:2] for c in calls] == [(0, (16, 8)), (1, (8, 16)), (2, (16, 8))]


def cli(*args):
    return llmlab.cli.main(["pretrain", "--recipe", "/dev/null", "--no-sample", "--quiet", *args])


@pytest.fixture
def only_pretrain_cli(monkeypatch):
    monkeypatch.setattr(llmlab.cli, "COMMANDS", ["pretrain"])


def sets(corpus, *extra):
    return [x for kv in (f"data.source={json.dumps(str(corpus))}", *TINY, *extra) for x in ("--set", kv)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.stepz=3"], "unknown recipe key 'train.stepz'; valid keys: train.steps, train.batch_size"),
        (["model.context=100000"], "the training split has"),
        (["model.vocab_size=100"], "model.vocab_size = 100 but the tokenizer has"),
        (["train.schedule=linear"], "recipe key train.schedule: must be one of cosine, wsd, constant"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(corpus, tmp_path, capsys, only_pretrain_cli, extra, message):
    assert cli("--out", str(tmp_path / "o"), *sets(corpus, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmlab: ") and message in err and "\n" not in err


def test_cli_corrupt_shards_and_unwritable_output(corpus, tmp_path, capsys, only_pretrain_cli):
    out = tmp_path / "run"
    pretrain(recipe(corpus, "train.steps=1"), out, verbose=False, sample=False)
    shard_dir = json.loads((out / "summary.json").read_text())["shards"]
    with open(f"{shard_dir}/val.bin", "r+b") as f:
        f.truncate(3)
    assert (
        cli("--out", str(tmp_path / "o"), *sets(corpus), "--set", f"data.source={json.dumps(shard_dir)}") == 2
    )
    assert "val.bin: corrupt shard" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli("--out", str(blocker / "out"), *sets(corpus)) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name", ["cpu-demo", "shakespeare-cpu", "tiny", "small", "gpt2-124m", "gpu-speedrun"]
)
def test_recipes_load_and_build(name):
    from pathlib import Path

    from llmlab.train.pretrain import model_config

    r = load_recipe(Path(__file__).parents[2] / "recipes" / f"{name}.toml")
    cfg = model_config(r.model, r.data.vocab_size)
    assert cfg.vocab_size >= r.data.vocab_size and cfg.context > 0
