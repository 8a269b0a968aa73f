"""The reward model: Bradley–Terry loss, the head in config.json, the HF export as
LlamaForSequenceClassification, and TRL's RewardTrainer on the same pairs."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import llmlab
from llmlab.align.common import pad_token
from llmlab.align.data import builtin_preferences, pair_batch, tokenize_pairs
from llmlab.align.reward import bradley_terry_loss
from llmlab.cli import main
from llmlab.model.heads import ScalarHeadModel
from llmlab.model.load import save_model_dir

from .conftest import tiny_chat_model


def test_bradley_terry_loss_by_hand():
    rc = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    rr = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    margin = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    loss, m = bradley_terry_loss(rc, rr, margin, center_coef=0.1)
    by_hand = (
        sum(-F.logsigmoid(torch.tensor(d, dtype=torch.float64)) for d in (0.5, 0.0, -2.0)) / 3
        + 0.1 * (9 + 0 + 0) / 3
    )
    assert abs(float(loss) - float(by_hand)) < 1e-12
    assert float(m["accuracy"]) == pytest.approx(1 / 3)  # strict >: the tie counts as wrong
    assert float(m["margin"]) == pytest.approx(-1 / 3) and float(m["min_reward"]) == -1.0


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    policy, tok = tiny_chat_model(seed=3)
    torch.manual_seed(1)
    model = ScalarHeadModel(policy, "reward")
    d = tmp_path_factory.mktemp("rm")
    save_model_dir(d, model, tok)
    return d


def _batch(tok, n=6):
    pairs = tokenize_pairs(tok, builtin_preferences("arithmetic")[:n], 48, verbose=False)
    return pair_batch(pairs, pad_token(tok))


def test_head_in_config_and_hf_export_scores_equal(reward_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert json.loads((reward_dir / "config.json").read_text())["head"] == "reward"
    model, tok = llmlab.load(reward_dir)
    assert isinstance(model, ScalarHeadModel) and model.kind == "reward"
    assert main(["export", "hf", "--model", str(reward_dir), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    b = _batch(tok)
    attention = (torch.arange(b["ids"].shape[1])[None] < b["lengths"][:, None]).long()
    with torch.no_grad():
        ours = model(b["ids"], b["lengths"])
        theirs = hf(input_ids=b["ids"], attention_mask=attention).logits[:, 0]
    assert (ours - theirs).abs().max() < 1e-4


def test_loss_and_accuracy_equal_trl_reward_trainer(reward_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    trl_reward = pytest.importorskip("trl.trainer.reward_trainer", reason="trl==1.16.0 not installed")
    model, tok = llmlab.load(reward_dir)
    assert main(["export", "hf", "--model", str(reward_dir), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    b = _batch(tok)
    attention = (torch.arange(b["ids"].shape[1])[None] < b["lengths"][:, None]).long()
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(gather_for_metrics=lambda x: x, gather=lambda x: x),
        args=SimpleNamespace(center_rewards_coefficient=0.01),
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    with torch.no_grad():
        theirs = trl_reward.RewardTrainer.compute_loss(
            stub, hf, {"input_ids": b["ids"], "attention_mask": attention}
        )
        n = b["ids"].shape[0] // 2
        r = model(b["ids"], b["lengths"])
        ours, m = bradley_terry_loss(r[:n], r[n:], center_coef=0.01)
    their = {k: v[-1] for k, v in stub._metrics["train"].items()}
    assert abs(float(ours) - float(theirs)) < 1e-4
    for k in ("accuracy", "margin", "mean_reward", "min_reward", "max_reward"):
        assert abs(float(m[k]) - their[k]) < 1e-4, k


def test_reward_cli_learns_and_a_policy_is_the_wrong_head(chat_dir, tmp_path, capsys):
    out = tmp_path / "rm"
    sets = ["train.device=cpu", "reward.steps=40", "reward.batch_size=16", "reward.lr=3e-3"]
    args = ["reward", "--model", str(chat_dir), "--data", "builtin:arithmetic", "--out", str(out), "--json"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    s = json.loads(capsys.readouterr().out)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert records[-1]["loss"] < records[0]["loss"] and s["val_pairs"] > 0
    model, _ = llmlab.load(out)
    assert model.kind == "reward"
    # DPO's policy must be an LM: a reward directory is refused in one line (exit 2)
    assert main(["dpo", "--model", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "has a 'reward' head but DPO's policy needs a 'lm' head" in capsys.readouterr().err
