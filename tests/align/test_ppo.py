"""PPO: GAE and whitening against slow loops, KL estimators and controller, the clipped losses,
ratio exactly 1 on the first minibatch of every rollout batch, exact resume, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab.align import ppo
from llmlab.cli import main
from llmlab.model.heads import ScalarHeadModel
from llmlab.model.load import save_model_dir

from .conftest import tiny_chat_model


def _rows(b=5, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):  # a prompt of p tokens, then a response of n
        p = int(torch.randint(0, 4, (1,), generator=g))
        n = int(torch.randint(1, t - p + 1, (1,), generator=g))
        mask[i, p : p + n] = 1
    rewards = torch.randn(b, t, generator=g, dtype=torch.float64) * mask
    values = torch.randn(b, t, generator=g, dtype=torch.float64) * mask
    return rewards, values, mask


def slow_gae(rewards, values, mask, gamma, lam):
    adv = torch.zeros_like(values)
    for b in range(values.shape[0]):
        ts = [t for t in range(values.shape[1]) if mask[b, t]]
        running = 0.0
        for j in reversed(range(len(ts))):
            t = ts[j]
            v_next = float(values[b, ts[j + 1]]) if j + 1 < len(ts) else 0.0
            delta = float(rewards[b, t]) + gamma * v_next - float(values[b, t])
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_equals_a_slow_loop(gamma, lam):
    rewards, values, mask = _rows()
    adv, ret = ppo.gae(rewards, values, mask, gamma, lam)
    a2, r2 = slow_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, a2, atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, r2, atol=1e-12, rtol=0)


def test_whitening_equals_a_slow_loop():
    x, _, mask = _rows(seed=1)
    xs = [float(x[i, j]) for i in range(x.shape[0]) for j in range(x.shape[1]) if mask[i, j]]
    mean = sum(xs) / len(xs)
    var = sum((v - mean) ** 2 for v in xs) / (len(xs) - 1)
    w = ppo.whiten(x, mask)
    expect = (x - mean) / (var + 1e-8) ** 0.5 * mask
    torch.testing.assert_close(w, expect, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        ppo.whiten(x, mask, shift_mean=False), (expect + mean) * mask, atol=1e-12, rtol=0
    )


def test_kl_estimators_and_controller():
    g = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(1000, generator=g) * 3, -torch.rand(1000, generator=g) * 3
    assert (ppo.kl_estimate(lp, ref, "k3") >= 0).all()
    assert torch.equal(ppo.kl_estimate(lp, ref, "k1"), lp - ref)
    assert torch.equal(ppo.kl_estimate(lp, lp, "k3"), torch.zeros(1000))
    c = ppo.KLController(0.1, adaptive=True, target=2.0, horizon=100)
    c.update(3.0, 10)  # error = min(3/2 − 1, 0.2) = 0.2 → β·(1 + 0.2·10/100)
    assert c.value == pytest.approx(0.1 * 1.02)
    c.update(1.5, 10)  # error = −0.25 → −0.2
    assert c.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = ppo.KLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1


def test_token_rewards_put_the_score_on_the_last_response_token():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.float64)
    kl = torch.full((2, 4), 0.5, dtype=torch.float64)
    r = ppo.token_rewards(torch.tensor([2.0, -1.0]), kl, mask, 0.1)
    assert torch.allclose(r, torch.tensor([[0, -0.05, 1.95, 0], [0, 0, -0.05, -1.05]], dtype=torch.float64))


def test_clipped_losses():
    mask = torch.ones(1, 3, dtype=torch.float64)
    old = torch.zeros(1, 3, dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64)
    s, n, m = ppo.policy_loss(old.clone(), old, adv, mask, 0.2)
    assert float(m["policy/ratio_dev"]) == 0.0 and float(m["policy/clipfrac"]) == 0.0
    assert float(s / n) == pytest.approx(-1 / 3)
    lp = torch.log(torch.tensor([[1.5, 1.5, 0.5]], dtype=torch.float64))
    s, n, m = ppo.policy_loss(lp, old, adv, mask, 0.2)
    # ρ = 1.5 with A > 0: clipped to 1.2; ρ = 1.5 with A < 0: the unclipped −A·ρ is larger; ρ = 0.5, A > 0: −0.5
    assert float(s / n) == pytest.approx((-1.2 + 1.5 - 0.5) / 3) and float(
        m["policy/clipfrac"]
    ) == pytest.approx(1 / 3)
    v, _, vm = ppo.value_loss(
        torch.tensor([[1.0, 0.0, 0.0]]),
        torch.zeros(1, 3),
        torch.tensor([[2.0, 0.0, 0.0]]),
        torch.ones(1, 3),
        0.5,
    )  # clipped V = 0.5: ½·max(1, 2.25)
    assert float(v) == pytest.approx(0.5 * 2.25) and float(vm["val/clipfrac"]) == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, chat_dir):
    d = tmp_path_factory.mktemp("ppo")
    trunk, tok = tiny_chat_model(seed=5)
    torch.manual_seed(2)
    save_model_dir(d / "rm", ScalarHeadModel(trunk, "reward"), tok)
    return chat_dir, d / "rm"


SETS = ["train.device=cpu", "train.log_every=1", "rlhf.steps=2", "rlhf.batch_size=4", "rlhf.max_new_tokens=5",
        "rlhf.ppo_epochs=2", "rlhf.minibatches=2", "rlhf.lr=1e-3", "rlhf.kl_estimator=k3", "rlhf.adaptive_kl=true"]  # fmt: skip


def _args(policy, rm, out, *extra):
    sets = [*SETS, *extra]
    return ["rlhf", "--model", str(policy), "--reward-model", str(rm), "--out", str(out), "--data",
            "builtin:arithmetic", *[x for s in sets for x in ("--set", s)]]  # fmt: skip


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_rlhf_first_minibatch_ratio_is_one_and_resume_is_exact(dirs, tmp_path, monkeypatch):
    policy, rm = dirs
    assert main(_args(policy, rm, tmp_path / "full", "train.save_every=4")) == 0
    recs = _records(tmp_path / "full")
    assert len(recs) == 8
    for first in (recs[0], recs[4]):  # the first minibatch of each rollout batch: π_θ = π_old
        assert first["policy/ratio_dev"] < 1e-6 and first["policy/clipfrac"] == 0.0
    assert all(r["objective/kl"] >= 0 for r in recs)  # k3
    assert recs[4]["kl_coef"] != recs[0]["kl_coef"]  # adaptive
    keys = {"objective/entropy", "objective/scores", "objective/rlhf_reward", "policy/approxkl", "val/ratio",
            "loss/value", "val/explained_variance"}  # fmt: skip
    assert keys <= set(recs[0])
    assert (tmp_path / "full" / "value" / "config.json").is_file()

    # killed right after the first rollout batch's checkpoint, then resumed: the same numbers
    import llmlab.align.ppo_train as pt

    real = pt.minibatch

    def dying(b, step_in_cycle, cfg, rollout_index):
        if rollout_index == 1:
            raise KeyboardInterrupt
        return real(b, step_in_cycle, cfg, rollout_index)

    monkeypatch.setattr(pt, "minibatch", dying)
    assert main(_args(policy, rm, tmp_path / "mid", "train.save_every=4")) == 130
    monkeypatch.setattr(pt, "minibatch", real)
    assert main([*_args(policy, rm, tmp_path / "mid", "train.save_every=4"), "--resume"]) == 0
    assert [r["loss"] for r in _records(tmp_path / "mid")] == [r["loss"] for r in recs]


def test_rlhf_bad_input(dirs, tmp_path, capsys):
    policy, _ = dirs
    assert main(_args(policy, policy, tmp_path / "o")) == 2  # a policy is no reward model
    assert "has a 'lm' head but rlhf's reward model needs a 'reward' head" in capsys.readouterr().err
    other, tok = tiny_chat_model(seed=1, vocab=280)
    save_model_dir(tmp_path / "rm2", ScalarHeadModel(other, "reward"), tok)
    assert main(_args(policy, tmp_path / "rm2", tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "vocabulary" in err and len(err.strip().splitlines()) == 1


def test_rlhf_trains_on_completions_that_fill_the_context(dirs, tmp_path, monkeypatch):
    """Long, hot completions run into the context (48): every row — prompt, completion and the
    appended <|end|> — still fits the policy, the value model and the reward model."""
    import llmlab.align.ppo_train as pt

    policy, rm = dirs
    lengths, real = [], pt.rl_batch

    def recorded(samples, pad_id):
        lengths.extend(len(s.prompt) + len(s.tokens) for s in samples)
        return real(samples, pad_id)

    monkeypatch.setattr(pt, "rl_batch", recorded)
    extra = ["rlhf.steps=1", "rlhf.max_new_tokens=60", "rlhf.temperature=2.0"]
    assert main(_args(policy, rm, tmp_path / "long", *extra)) == 0
    assert max(lengths) == 48  # the tiny models' context: some completion was cut there
