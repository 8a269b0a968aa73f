"""The reward–KL frontier sweep on a tiny model: the lexicon reward, pair labelling, every policy placed."""

from __future__ import annotations

import numpy as np
import torch

from llmlab.align.frontier import frontier, label_pairs, true_reward
from llmlab.align.rollout import Sample
from llmlab.model.load import save_model_dir

from .conftest import recipe


def test_true_reward_counts_lexicon_words():
    assert true_reward("O sweet love, fair and good!") == 4.0
    assert true_reward("Death, blood and woe; but love.") == -2.0
    assert true_reward("the king") == 0.0


def test_pairs_choose_the_higher_true_reward_and_drop_ties():
    texts = ("sweet love", "death", "the", "a", "woe", "joy")
    s = [Sample([1], [i], [0.0], True, t) for i, t in enumerate(texts)]
    assert [(p.chosen, p.rejected) for p in label_pairs(s)] == [([0], [1]), ([5], [4])]


def test_frontier_places_the_base_each_dpo_beta_and_each_ppo_coefficient(tmp_path):
    from llmlab.align.frontier import NEGATIVE, POSITIVE
    from llmlab.model import ModelConfig, Transformer
    from llmlab.tokenizer import Tokenizer

    words = sorted(POSITIVE | NEGATIVE)
    tok = Tokenizer.train([" ".join(words)] * 4, 256 + 9 + 200)  # whole lexicon words become tokens
    torch.manual_seed(2)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=4, n_kv_head=2,
                                    d_ff=64, context=32))  # fmt: skip
    save_model_dir(tmp_path / "base", model, tok)
    g = np.random.default_rng(0)
    train_tokens, val_tokens = g.integers(0, tok.vocab_size, 4000), g.integers(0, tok.vocab_size, 1000)
    rec = recipe(
        "align.frontier_prompts=16", "align.frontier_new_tokens=6", "align.frontier_betas=[0.5]",
        "align.frontier_kl_coefs=[0.1]", "dpo.steps=2", "dpo.batch_size=4", "reward.steps=2",
        "rlhf.steps=1", "rlhf.batch_size=4", "rlhf.ppo_epochs=1", "rlhf.minibatches=1",
    )  # fmt: skip
    torch.manual_seed(0)
    res = frontier(rec, tmp_path / "base", train_tokens, val_tokens, tmp_path / "out")
    assert [(p["method"], p["param"]) for p in res["points"]] == [("base", 0.0), ("dpo", 0.5), ("ppo", 0.1)]
    assert res["points"][0]["kl"] == 0.0  # the base model against itself
    assert len(res["overopt"]) == 1 and res["pairs"] > 0


def test_spearman_by_hand():
    from llmlab.align.frontier import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert abs(spearman([1, 2, 3], [1, 1, 2]) - 0.8660254037844387) < 1e-12  # ties: average ranks
    assert spearman([1, 2], [5, 5]) != spearman([1, 2], [5, 5])  # nan for a constant side
