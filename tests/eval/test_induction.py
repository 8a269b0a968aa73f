"""The induction probe (eval/induction.py) against models whose answer is known."""

from types import SimpleNamespace

import torch

from llmlab.eval.induction import induction_score


class Uniform(torch.nn.Module):
    """The same logits everywhere: both copies cost ln V per token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.cfg = SimpleNamespace(context=512, vocab_size=vocab)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.cfg.vocab_size) + self.w


class Copier(Uniform):
    """Predicts the token that followed the previous occurrence of the current token (an induction
    head written out); uniform where the current token has not occurred before."""

    def forward(self, ids):
        out = torch.zeros(*ids.shape, self.cfg.vocab_size)
        seq = ids[0].tolist()
        for t, tok in enumerate(seq):
            earlier = [i for i in range(t) if seq[i] == tok]
            if earlier:
                nxt = earlier[-1] + 1
                out[0, t, seq[nxt]] = 50.0
        return out + self.w


class Tok:
    """One id per word and one for ".": a list's words are distinct tokens."""

    def __init__(self):
        self.ids: dict[str, int] = {".": 0}

    def encode_ordinary(self, text):
        words = text.replace(".", " .").split()
        return [self.ids.setdefault(w, len(self.ids)) for w in words]


def test_uniform_model_pays_the_same_on_both_copies():
    r = induction_score(Uniform(200), Tok(), lists=5)
    assert abs(r["first"] - r["repeat"]) < 1e-6 and abs(r["first"] - torch.log(torch.tensor(200.0))) < 1e-4


def test_a_copying_model_gets_the_repeat_nearly_free():
    r = induction_score(Copier(200), Tok(), lists=5)
    # only the repeat's first word is unpredictable: 1 of its 7 tokens costs ln 200
    assert r["repeat"] < 1.0 and r["first"] > 5.0
