"""Beam search against exhaustive search and transformers; speculative decoding's exactness."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from llmlab.errors import UserError
from llmlab.generate import SamplingParams, beam_search, generate, speculative_generate
from llmlab.generate.speculative import accept_or_resample


def _seq_logprob(model, prompt, cont):
    with torch.no_grad():
        logp = model(torch.tensor([prompt + cont]))[0].log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))


def test_beam_with_enough_beams_is_exhaustive_search(make_model):
    model = make_model(seed=1, vocab_size=6, d_model=16, n_head=2, n_kv_head=1, d_ff=16)
    prompt = [1, 2]
    best = max(itertools.product(range(6), repeat=3), key=lambda c: _seq_logprob(model, prompt, list(c)))
    hyps = beam_search(model, prompt, num_beams=36, max_new_tokens=3, num_return=3)
    assert hyps[0].token_ids == list(best)
    assert hyps[0].sum_logprob == pytest.approx(_seq_logprob(model, prompt, list(best)), abs=1e-4)
    assert hyps[0].score >= hyps[1].score >= hyps[2].score


def test_one_beam_is_greedy(model, tok):
    assert generate(model, tok, "abc", max_new_tokens=10, num_beams=1, temperature=0) == tok.decode(
        beam_search(model, tok.encode("abc"), 1, 10, stop_token_ids=[259])[0].token_ids
    )


def test_length_penalty_and_stop_tokens(make_model):
    model = make_model(seed=2, vocab_size=8, d_model=16, n_head=2, n_kv_head=1, d_ff=16)
    hyps = beam_search(
        model, [1], num_beams=4, max_new_tokens=6, stop_token_ids=[0], num_return=4, length_penalty=0.5
    )
    for h in hyps:
        assert 0 not in h.token_ids
        n = len(h.token_ids)
        stop = [0] if h.finish_reason == "stop" else []
        assert h.sum_logprob == pytest.approx(_seq_logprob(model, [1], h.token_ids + stop), abs=1e-4)
        assert h.score == pytest.approx(h.sum_logprob / max(n, 1) ** 0.5, abs=1e-5)


def test_beam_equals_transformers(tmp_path, make_model):
    transformers = pytest.importorskip("transformers")
    from llmlab.model.hf import export_hf

    model = make_model(seed=5)
    export_hf(model, None, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    prompt = [3, 70, 71, 72]
    with torch.no_grad():
        theirs = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=8,
            num_beams=3,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            early_stopping=True,
        )[0, len(prompt) :].tolist()
    assert beam_search(model, prompt, 3, 8)[0].token_ids == theirs


def test_speculative_greedy_equals_greedy(model, make_model, tok):
    draft = make_model(seed=9, n_layer=1)
    for prompt in ("hello", "x"):
        want = generate(model, tok, prompt, max_new_tokens=25, temperature=0, stop_token_ids=[])
        got = generate(
            model,
            tok,
            prompt,
            max_new_tokens=25,
            temperature=0,
            stop_token_ids=[],
            draft_model=draft,
            num_draft=3,
        )
        assert got == want


def test_speculative_with_itself_accepts_everything(model):
    res = speculative_generate(model, model, [1, 2, 3], SamplingParams(temperature=0, max_new_tokens=20), 4)
    assert res.acceptance_rate == 1.0 and len(res.token_ids) == 20
    assert res.rounds == 4  # 5 tokens a round: 4 drafted + 1 bonus


def test_speculative_sampling_is_seeded(model, make_model):
    draft = make_model(seed=9, n_layer=1)
    run = lambda s: speculative_generate(model, draft, [5, 6], SamplingParams(seed=s, max_new_tokens=15), 3)  # noqa: E731
    assert run(1).token_ids == run(1).token_ids != run(2).token_ids
    assert 0 <= run(1).acceptance_rate <= 1


def test_rejection_rule_output_is_distributed_as_target():
    """P(first output = x) must be p(x) whatever q is: check 20 000 seeded draws against p."""
    p = torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    q = torch.tensor([[0.4, 0.1, 0.1, 0.4]])
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    n = 20000
    drafts = torch.multinomial(q[0], n, replacement=True, generator=g).tolist()
    for x in drafts:
        m, y = accept_or_resample(p, q, [x], g)
        counts[x if m == 1 else y] += 1
    torch.testing.assert_close(counts / n, p[0], atol=0.015, rtol=0)


@pytest.mark.parametrize("bad", [260, -1, "x"])
@pytest.mark.parametrize("path", ["sampling", "beam", "speculative"])
def test_logit_bias_outside_the_vocabulary_is_a_user_error(model, make_model, tok, path, bad):
    """Every decoding path checks logit_bias ids against the vocabulary, naming the id and the range
    (beam search ignored them, speculative decoding indexed with them: a traceback or a wrong bias)."""
    kw = {
        "sampling": {},
        "beam": dict(num_beams=2),
        "speculative": dict(draft_model=make_model(seed=9, n_layer=1)),
    }
    with pytest.raises(UserError, match=rf"logit_bias: token id {re.escape(repr(bad))} .*\[0, 260\)"):
        generate(model, tok, "ab", max_new_tokens=4, logit_bias={bad: 5.0}, **kw[path])


def test_speculative_logit_bias_is_checked_against_the_shared_vocabulary(model, make_model):
    """Speculative decoding samples over the vocabulary both models share; an id beyond it is an error."""
    draft = make_model(seed=9, n_layer=1, vocab_size=258)
    params = SamplingParams(temperature=0, max_new_tokens=4, logit_bias={259: 5.0})
    with pytest.raises(UserError, match=r"token id 259 .*\[0, 258\)"):
        speculative_generate(model, draft, [1, 2, 3], params)
    ok = SamplingParams(temperature=0, max_new_tokens=4, logit_bias={7: 100.0})
    assert speculative_generate(model, draft, [1, 2, 3], ok).token_ids == [7, 7, 7, 7]
