"""The induction probe (eval/induction.py) against models whose answer is known."""

from types import SimpleNamespace

import torch

from llmlab.eval.induction import copy_by_distance, induction_score


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
    head written out), looking back at most `window` tokens (None: anywhere, a content lookup; a
    window is what rows of adjacent span pairs can teach); uniform where there is none."""

    def __init__(self, vocab: int, window: int | None = None):
        super().__init__(vocab)
        self.window = window

    def forward(self, ids):
        out = torch.zeros(*ids.shape, self.cfg.vocab_size)
        seq = ids[0].tolist()
        for t, tok in enumerate(seq):
            start = 0 if self.window is None else max(0, t - self.window)
            earlier = [i for i in range(start, t) if seq[i] == tok]
            if earlier:
                out[0, t, seq[earlier[-1] + 1]] = 50.0
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


def test_copy_by_distance_tells_a_content_copier_from_one_that_looks_back_a_few_tokens():
    ln_v = torch.log(torch.tensor(200.0)).item()
    full = copy_by_distance(Copier(200), Tok(), gaps=(0, 16, 48))
    local = copy_by_distance(Copier(200, window=6), Tok(), gaps=(0, 16, 48))
    flat = copy_by_distance(Uniform(200), Tok(), gaps=(0, 16))
    assert all(v < 0.01 for v in full.values())  # one id per word: the repeat's 2 later words copied
    assert local[0] < 0.01 and abs(local[16] - ln_v) < 1e-3 and abs(local[48] - ln_v) < 1e-3
    assert all(abs(v - ln_v) < 1e-4 for v in flat.values())


def test_gaps_that_do_not_fit_the_context_are_left_out():
    short = Copier(200)
    short.cfg.context = 20
    assert list(copy_by_distance(short, Tok(), gaps=(0, 4, 16, 48))) == [0, 4]
