"""The reward–KL frontier (the DPO paper's Figure 2 in miniature) and reward over-optimisation.

Prompts are short Shakespeare prefixes (token windows of the pretraining shards: train split for
training, val split held out). The true reward r* of a continuation is a sentiment score from a
small lexicon written here, #positive − #negative words: the stand-in for the paper's sentiment
classifier. Preference pairs are two base-model samples per prompt, the one with the higher r*
chosen (ties dropped). On those pairs: DPO at each β of `[align] frontier_betas`, and a reward model;
PPO against that reward model at each KL coefficient of `frontier_kl_coefs`. Every policy is then
sampled on the held-out prompts and placed at (KL(π‖π_ref), mean r*), with

    KL(π‖π_ref) ≈ mean over samples y∼π of Σ_t log π(y_t|·) − log π_ref(y_t|·)     (unbiased)

Over-optimisation: PPO with KL coefficient 0 against the same learned reward model, the proxy score
and r* of each rollout batch side by side (Gao et al. 2022: the proxy keeps rising, r* need not).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import re
from pathlib import Path

import torch

from llmlab.align.data import PairSeq
from llmlab.align.rollout import Prompt, sample
from llmlab.errors import UserError

POSITIVE = frozenset(
    [
        "love",
        "sweet",
        "fair",
        "good",
        "joy",
        "happy",
        "gentle",
        "kind",
        "noble",
        "honour",
        "grace",
        "bless",
        "blessed",
        "merry",
        "dear",
        "true",
        "peace",
        "hope",
        "smile",
        "laugh",
        "gold",
        "heaven",
        "glad",
        "delight",
        "beauty",
        "beauteous",
        "friend",
        "praise",
        "virtue",
        "best",
        "rich",
        "brave",
    ]
)
NEGATIVE = frozenset(
    [
        "hate",
        "death",
        "die",
        "dead",
        "foul",
        "vile",
        "grief",
        "woe",
        "sorrow",
        "curse",
        "cursed",
        "blood",
        "fear",
        "poor",
        "sad",
        "sick",
        "evil",
        "false",
        "villain",
        "war",
        "tears",
        "cruel",
        "plague",
        "shame",
        "hell",
        "weep",
        "wretched",
        "murder",
        "kill",
        "traitor",
    ]
)


def true_reward(text: str) -> float:
    """r*: #positive − #negative lexicon words in `text` (lower-cased, letters only)."""
    words = re.findall(r"[a-z]+", text.lower())
    return float(sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words))


def prefixes(tokens, n: int, length: int, seed: int) -> list[Prompt]:
    """n seeded windows of `length` tokens from a token array (a shard split)."""
    rng = random.Random(seed)
    hi = len(tokens) - length - 1
    return [Prompt([int(t) for t in tokens[s : s + length]]) for s in (rng.randrange(hi) for _ in range(n))]


def label_pairs(samples) -> list[PairSeq]:
    """Consecutive samples (two per prompt) → a pair with the higher-r* one chosen; ties dropped."""
    pairs = []
    for a, b in zip(samples[::2], samples[1::2]):
        ra, rb = true_reward(a.text), true_reward(b.text)
        if ra != rb and a.tokens and b.tokens:
            c, r = (a, b) if ra > rb else (b, a)
            pairs.append(PairSeq(a.prompt, c.tokens, r.tokens))
    return pairs


@torch.no_grad()
def place(policy, ref, tok, prompts: list[Prompt], new_tokens: int, seed: int) -> dict[str, float]:
    """{"kl", "reward"}: the policy's mean KL to the reference and mean r* on its own samples."""
    from llmlab.align.common import pad_token
    from llmlab.align.rollout import rl_batch
    from llmlab.model.logprobs import token_logprobs

    policy.eval()
    samples = sample(policy, tok, prompts, 2, max_new_tokens=new_tokens, temperature=1.0, seed=seed)
    b = rl_batch(samples, pad_token(tok))
    dev = next(policy.parameters()).device
    lp = token_logprobs(policy, b["ids"].to(dev)).cpu()
    lr = token_logprobs(ref, b["ids"].to(dev)).cpu()
    log_ratio = ((lp - lr) * b["mask"]).sum(1)
    rewards = [true_reward(s.text) for s in samples]
    return {
        "kl": float(log_ratio.mean()),
        "reward": sum(rewards) / len(rewards),
        "rank_corr": spearman(log_ratio.tolist(), rewards),  # DPO's implicit reward (÷β) against r*
    }


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx > 0 and vy > 0 else float("nan")


def frontier(recipe, base_dir: str | os.PathLike, train_tokens, val_tokens, out_dir: str | os.PathLike,
             verbose: bool = False) -> dict:  # fmt: skip
    """Run the sweep into `out_dir` (prompts from the two token arrays, e.g. the pretraining shards'
    train and val splits); returns {"points": [{"method", "param", "kl", "reward"}],
    "overopt": [[proxy score, r*] per rollout batch], "pairs"}."""
    from llmlab.align.common import load_policy
    from llmlab.align.dpo_train import dpo_on_pairs
    from llmlab.align.ppo_train import rlhf_on_prompts
    from llmlab.align.reward import reward_on_pairs
    from llmlab.model.load import load_model_dir

    a, out = recipe.align, Path(out_dir)
    base, tok = load_policy(base_dir, "the frontier's base model")
    train_p = prefixes(train_tokens, a.frontier_prompts, a.frontier_prefix, a.seed)
    held = prefixes(val_tokens, max(8, a.frontier_prompts // 2), a.frontier_prefix, a.seed + 1)
    n_new = a.frontier_new_tokens
    pairs = label_pairs(sample(base, tok, train_p, 2, max_new_tokens=n_new, temperature=1.0, seed=a.seed))
    if len(pairs) < 2:
        raise UserError(
            f"frontier: {len(pairs)} preference pairs (sample pairs tied on r*); raise align.frontier_prompts "
            "or align.frontier_new_tokens"
        )
    points = [{"method": "base", "param": 0.0, **place(base, base, tok, held, n_new, a.seed)}]
    for beta in a.frontier_betas:
        r = dataclasses.replace(recipe, dpo=dataclasses.replace(recipe.dpo, beta=beta))
        policy = copy.deepcopy(base)
        dpo_on_pairs(r, policy, tok, pairs, [], out / f"dpo_{beta}", verbose=verbose)
        points.append({"method": "dpo", "param": beta, **place(policy, base, tok, held, n_new, a.seed)})
    reward_on_pairs(recipe, copy.deepcopy(base), tok, pairs, [], out / "reward", verbose=verbose)
    rm, _ = load_model_dir(out / "reward")
    ppo_cfg = dataclasses.replace(
        recipe.rlhf, max_new_tokens=n_new, missing_eos_penalty=0.0, adaptive_kl=False
    )
    overopt: list[list[float]] = []
    for coef in [*a.frontier_kl_coefs, 0.0]:
        r = dataclasses.replace(recipe, rlhf=dataclasses.replace(ppo_cfg, kl_coef=coef))
        policy = copy.deepcopy(base)
        s = rlhf_on_prompts(r, policy, tok, rm, train_p, out / f"ppo_{coef}", verbose=verbose,
                            observe=lambda xs: sum(true_reward(x.text) for x in xs) / len(xs))  # fmt: skip
        if coef == 0.0:
            overopt = [[h[1], h[4]] for h in s["history"]]
        else:
            points.append({"method": "ppo", "param": coef, **place(policy, base, tok, held, n_new, a.seed)})
    return {"points": points, "overopt": overopt, "pairs": len(pairs), "held_out_prompts": len(held)}


def plot_frontier(points: list[dict], path) -> Path | None:
    from llmlab.report.plots import pyplot, save_png, style

    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for method, color in (("base", "#444444"), ("dpo", "#4c72b0"), ("ppo", "#dd8452")):
        ps = [p for p in points if p["method"] == method]
        ax.scatter([p["kl"] for p in ps], [p["reward"] for p in ps], color=color, label=method, s=36)
        for p in ps:
            if method != "base":
                ax.annotate(
                    f"{'β' if method == 'dpo' else 'kl'}={p['param']:g}", (p["kl"], p["reward"]), fontsize=8
                )
    ax.set_xlabel("KL(π ‖ π_ref) on held-out prompts (nats)")
    ax.set_ylabel("mean true reward r* (lexicon sentiment)")
    style(ax)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_overopt(overopt: list[list[float]], path) -> Path | None:
    from llmlab.report.plots import pyplot, save_png, style

    if not overopt:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    xs = list(range(1, len(overopt) + 1))
    ax.plot(xs, [o[0] for o in overopt], "o-", color="#dd8452", label="proxy: reward-model score")
    ax.plot(xs, [o[1] for o in overopt], "s-", color="#4c72b0", label="true reward r*")
    ax.set_xlabel("PPO rollout batch (KL coefficient 0)")
    style(ax)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save_png(fig, path)
