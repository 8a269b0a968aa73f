"""GRPO: group advantages, the four token aggregations against TRL 1.16's `GRPOTrainer._compute_loss`,
no gradient from a group of equal rewards, and `llmlab grpo` end to end."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from llmlab.align.grpo import GRPO_LOSS_TYPES, exact_reward, format_reward, group_advantages, grpo_loss
from llmlab.cli import main


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_sum_to_zero_and_match_the_formula(scale):
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5, 3.0, 1.0, 0.0], dtype=torch.float64)
    a = group_advantages(r, 4, scale)
    assert torch.allclose(a.view(3, 4).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.equal(a[4:8], torch.zeros(4, dtype=torch.float64))  # all equal: no signal
    for g in range(3):  # slow reference, one group at a time
        grp = r[4 * g : 4 * g + 4].tolist()
        mean = sum(grp) / 4
        std = (sum((x - mean) ** 2 for x in grp) / 3) ** 0.5  # Bessel's correction, as TRL's nanstd
        batch_std = float(r.std())
        for i, x in enumerate(grp):
            d = {"group": std + 1e-4, "batch": batch_std + 1e-4, "none": 1.0}[scale]
            assert abs(float(a[4 * g + i]) - (x - mean) / d) < 1e-12


def test_k_below_two_is_an_error():
    from llmlab.errors import UserError

    with pytest.raises(UserError, match=r"grpo\.k: 1 samples per prompt"):
        group_advantages(torch.zeros(3), 1)


def _inputs(b=6, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, c + 1, (b,), generator=g)
    mask = (torch.arange(c)[None] < lengths[:, None]).double()
    old = -torch.rand(b, c, generator=g, dtype=torch.float64) * 2
    new = old + 0.3 * torch.randn(b, c, generator=g, dtype=torch.float64)  # some ratios clip
    ref = old + 0.2 * torch.randn(b, c, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    ent = torch.rand(b, c, generator=g, dtype=torch.float64)
    return mask, old, new, ref, adv, ent


def _trl_loss(loss_type, beta, eps, eps_high, mask, old, new, ref, adv, ent):
    trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="trl==1.16.0 not installed")
    b, c = mask.shape
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (new, ent, None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type=loss_type, epsilon_low=eps, epsilon_high=eps_high, use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, max_completion_length=c,
        accelerator=SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x),
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
    )  # fmt: skip
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, c, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum(),
    }  # fmt: skip
    loss = trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_grpo_loss_equals_trl(loss_type, beta):
    mask, old, new, ref, adv, ent = _inputs()
    leaf = new.clone().requires_grad_()
    theirs, their_m = _trl_loss(loss_type, beta, 0.2, 0.28, mask, old, leaf, ref, adv, ent)
    (their_grad,) = torch.autograd.grad(theirs, leaf)
    leaf2 = new.clone().requires_grad_()
    s, n, m = grpo_loss(
        leaf2, old, adv, mask, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=beta, ref_logps=ref,
        max_completion_length=mask.shape[1], entropy=ent,
    )  # fmt: skip
    ours = s / n
    (our_grad,) = torch.autograd.grad(ours, leaf2)
    assert abs(ours.item() - theirs.item()) < 1e-9
    torch.testing.assert_close(our_grad, their_grad, atol=1e-9, rtol=0)
    for k in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy"):
        assert abs(float(m[k]) - their_m[k]) < 1e-9, k
    if beta:
        assert abs(float(m["kl"]) - their_m["kl"]) < 1e-9 and float(m["kl"]) >= 0


def test_a_group_of_equal_rewards_gives_no_gradient():
    mask, old, new, _, _, _ = _inputs(b=8)
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 3.0, 3.0, 3.0, 3.0]), 4).double()
    leaf = new.clone().requires_grad_()
    s, n, _ = grpo_loss(leaf, old, adv, mask, loss_type="grpo")
    (g,) = torch.autograd.grad(s / n, leaf)
    assert torch.equal(g[4:], torch.zeros_like(g[4:])) and g[:4].abs().sum() > 0


def test_builtin_rewards():
    assert exact_reward([" 12 ", "13", "x"], ["12", "12", "12"], [True, True, False]) == [1.0, 0.0, 0.0]
    assert format_reward(["12", "twelve", "7"], ["", "", ""], [True, True, False]) == [1.0, 0.0, 0.0]


def test_grpo_cli_runs_and_records_reward_metrics(chat_dir, tmp_path, capsys):
    out = tmp_path / "g"
    sets = ["train.device=cpu", "train.log_every=1", "grpo.steps=2", "grpo.k=3", "grpo.batch_size=2",
            "grpo.max_new_tokens=4", "grpo.iterations=2"]  # fmt: skip
    args = ["grpo", "--model", str(chat_dir), "--data", "builtin:arithmetic", "--out", str(out), "--json"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["held_out"] > 0 and len(s["rewards"]) == 1  # one rollout batch, used for 2 updates
    rec = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "reward_std", "frac_reward_zero_std", "clip_ratio/region_mean", "entropy"} <= set(
        rec[0]
    )
    assert rec[0]["logprob_gap"] < 1e-4  # the engine's log-probs are the policy's
    assert main([*args[:-1], "--set", "grpo.k=1"]) == 2
    assert "grpo.k" in capsys.readouterr().err


def test_grpo_runs_one_policy_forward_per_update_and_fills_stop_logprobs(chat_dir, tmp_path, monkeypatch):
    """No forward of its own for π_old's stop tokens: the first update's forward (same weights) fills them."""
    import llmlab.align.grpo_train as gt

    from .conftest import recipe

    calls, real = [], gt.batch_logprobs

    def counted(model, batch, **kw):
        lp = real(model, batch, **kw)
        calls.append(torch.is_grad_enabled())
        return lp

    monkeypatch.setattr(gt, "batch_logprobs", counted)
    sets = ["grpo.steps=2", "grpo.k=2", "grpo.batch_size=2", "grpo.max_new_tokens=4", "grpo.iterations=1"]
    s = gt.grpo(recipe(*sets), chat_dir, tmp_path / "g", verbose=False)
    assert calls == [True, True]  # two updates, no extra no-grad forward per rollout batch
    rec = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert len(rec) == 2 and all(r["logprob_gap"] < 1e-4 for r in rec) and s["steps"] == 2
    state = torch.load(tmp_path / "g" / "train_state.pt", weights_only=False)
    assert not torch.isnan(state["extra"]["user"]["batch"]["old_logps"]).any()
