"""ICL evaluation: prompts, multiple-choice log-likelihood against a slow reference, exact match."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from llmlab.data.synthetic import Example, conversations
from llmlab.errors import UserError
from llmlab.eval import evaluate, get_task, icl
from llmlab.eval.tasks import Task
from llmlab.model import ModelConfig, Transformer
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [m["content"] for c in conversations("mix")[:600] for m in c] + ["Q: A: Paris Rome x y"]
    return Tokenizer.train(texts, 400)


@pytest.fixture(scope="module")
def model(tok) -> Transformer:
    torch.manual_seed(0)
    return Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=256
        )
    ).eval()


class FavoursToken(torch.nn.Module):
    """A stub LM whose next-token distribution always puts most mass on one token."""

    def __init__(self, vocab: int, token: int, context: int = 256):
        super().__init__()
        self.cfg = ModelConfig(
            vocab_size=vocab, n_layer=1, d_model=8, n_head=2, n_kv_head=2, d_ff=8, context=context
        )
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.token = token

    def forward(self, ids, **kw):
        logits = torch.zeros(*ids.shape, self.cfg.vocab_size)
        logits[..., self.token] = 5.0
        return logits + self.w


def test_normalize():
    assert icl.normalize("  Paris.\n") == "paris"
    assert icl.normalize("c  a\tt") == "c a t"
    assert icl.normalize('"cat"') == '"cat"'


def test_plain_prompt_format(tok):
    task = get_task("arithmetic")
    ids = icl.plain_prompt(tok, task.train[:2], "What is 1 + 1?")
    assert ids[0] == tok.special_tokens["<|bos|>"]
    a, b = task.train[:2]
    assert (
        tok.decode(ids[1:])
        == f"Q: {a.prompt}\nA: {a.answer}\n\nQ: {b.prompt}\nA: {b.answer}\n\nQ: What is 1 + 1?\nA:"
    )


def test_chat_prompt_uses_the_template(tok):
    task = get_task("arithmetic")
    ids = icl.chat_prompt(tok, task.train[:1], "Q?")
    assert tok.decode(ids) == (
        f"<|bos|><|user|>{task.train[0].prompt}<|end|><|assistant|>{task.train[0].answer}"
        "<|end|><|user|>Q?<|end|><|assistant|>"
    )


def test_shots_are_nested_seeded_and_exclude_the_item():
    task = get_task("capitals")
    s8 = icl.pick_shots(task, 3, 8, seed=1)
    assert icl.pick_shots(task, 3, 1, seed=1) == s8[:1] and icl.pick_shots(task, 3, 8, seed=1) == s8
    assert icl.pick_shots(task, 3, 8, seed=2) != s8
    own = Task("t", "gen", [Example(f"q{i}", f"a{i}") for i in range(5)])  # no train split
    assert all(ex.prompt != "q2" for ex in icl.pick_shots(own, 2, 4))


def test_long_prompts_drop_the_oldest_shots(tok):
    task = get_task("format")
    full = icl.build_prompt(tok, task, 0, 8, chat=False, max_len=10_000)
    cut = icl.build_prompt(tok, task, 0, 8, chat=False, max_len=len(full) - 1)
    assert len(cut) < len(full) and tok.decode(cut).endswith(tok.decode(full)[-40:])
    assert tok.decode(full).count("Q: ") == 9 and tok.decode(cut).count("Q: ") == 8  # one shot fewer


def test_scores_equal_a_slow_reference(model, tok):
    pairs = [
        (tok.encode_ordinary("Q: capital?\nA:"), tok.encode_ordinary(" Paris\n")),
        (tok.encode_ordinary("x"), tok.encode_ordinary(" y y y")),
        (tok.encode_ordinary("a much longer context to pad the others"), tok.encode_ordinary(" Rome")),
    ]
    fast = icl.score_continuations(model, pairs, batch_size=2)
    for (ctx, cont), got in zip(pairs, fast):
        seq = ctx + cont
        slow = 0.0
        with torch.no_grad():
            for j in range(len(cont)):  # one forward per continuation token, on the prefix only
                logits = model(torch.tensor([seq[: len(ctx) + j]]))[0, -1]
                slow += float(F.log_softmax(logits, -1)[cont[j]])
        assert got == pytest.approx(slow, abs=1e-4)


def test_multiple_choice_picks_the_likeliest_option(tok):
    t = tok.encode_ordinary("x")[0]
    stub = FavoursToken(tok.vocab_size, t)
    # options made of the favoured token win; the chat terminator <|end|> is unfavoured for every option alike
    task = Task("stub", "mc", [Example("q", "x", ("x", "y")), Example("q2", "y", ("x", "y"))])
    r = evaluate(stub, tok, task, shots=[0], chat=True)
    assert r["acc"] == [0.5] and r["chance"] == 0.5
    assert [e["prediction"] for e in r["examples"]] == ["x", "x"]


def test_generation_exact_match(monkeypatch, model, tok):
    task = Task(
        "stub",
        "gen",
        [Example("q1", "Paris"), Example("q2", "c a t"), Example("q3", "7")],
        [Example("t", "u")],
    )
    calls = {}

    def fake_generate(m, t, prompts, max_new_tokens, temperature, stop):
        calls.update(n=len(prompts), stop=stop, temperature=temperature)
        return [" paris.\nQ: more", "c  a t", "8"]

    monkeypatch.setattr("llmlab.generate.generate", fake_generate)
    r = evaluate(model, tok, task, shots=[0, 2], chat=False)
    assert r["acc"] == [pytest.approx(2 / 3)] * 2
    assert calls == {"n": 3, "stop": ["\n"], "temperature": 0}
    r = evaluate(model, tok, task, shots=[0], chat=True)
    assert calls["stop"] is None


def test_real_generation_runs(model, tok):
    r = evaluate(model, tok, "arithmetic", shots=[0, 1], chat=False, limit=4)
    assert r["n"] == 4 and len(r["acc"]) == 2 and all(0 <= a <= 1 for a in r["acc"])
    r = evaluate(model, tok, "capitals", shots=[0], chat=True, limit=4)
    assert r["kind"] == "mc" and 0 <= r["acc_norm"][0] <= 1


def test_user_task_files(tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"context": "2 + 2 =", "choices": ["4", "5"], "answer": 0},
                {"context": "sky is", "choices": ["blue", "green"], "answer": "blue", "split": "train"},
            ]
        )
        + "\n"
    )
    task = get_task(mc)
    assert task.kind == "mc" and task.test[0].answer == "4" and len(task.train) == 1
    gen = tmp_path / "gen.jsonl"
    gen.write_text('{"prompt": "1 + 1 =", "answer": "2"}\n')
    assert get_task(gen).kind == "gen"
    for text, match in [
        (
            '{"context": "c", "choices": ["a", "b"], "answer": 2}',
            r"bad\.jsonl:1: answer index 2 is out of range",
        ),
        (
            '{"context": "c", "choices": ["a", "b"], "answer": "z"}',
            r"bad\.jsonl:1: 'answer' must be an index",
        ),
        ('{"question": "c"}', r"bad\.jsonl:1: expected"),
        ('{"prompt": "c"', r"bad\.jsonl:1: malformed JSON"),
        ('{"prompt": "c", "answer": "d", "split": "train"}', r"no test examples"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text + "\n")
        with pytest.raises(UserError, match=match):
            get_task(bad)
    with pytest.raises(UserError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(UserError, match="needs 'choices'"):
        get_task(gen, kind="mc")
