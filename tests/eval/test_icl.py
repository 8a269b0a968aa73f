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


class Scripted(torch.nn.Module):
    """A stub LM that has memorised some token sequences: after any prefix of one of them it puts
    almost all its mass on that sequence's next token; elsewhere it is uniform."""

    def __init__(self, vocab: int, sequences: list[list[int]], context: int = 256):
        super().__init__()
        self.cfg = ModelConfig(
            vocab_size=vocab, n_layer=1, d_model=8, n_head=2, n_kv_head=2, d_ff=8, context=context
        )
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.next = {tuple(s[:j]): s[j] for s in sequences for j in range(1, len(s))}

    def forward(self, ids, **kw):
        logits = torch.zeros(*ids.shape, self.cfg.vocab_size)
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                if (nxt := self.next.get(tuple(row[: t + 1]))) is not None:
                    logits[b, t, nxt] = 12.0
        return logits + self.w


def mc_contexts(tok, task: Task, k: int, chat: bool, n: int, context: int = 256) -> list[list[int]]:
    """The prompts `score_mc` builds for the first n items (same arguments)."""
    return [
        icl.build_prompt(
            tok,
            task,
            i,
            k,
            chat,
            context,
            reserve=max(len(icl.continuation_ids(tok, c, chat)) for c in task.test[i].choices),
        )
        for i in range(n)
    ]


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
        f"<|bos|><|user|>{task.train[0].prompt}<|end|><|assistant|> {task.train[0].answer}"
        "<|end|><|user|>Q?<|end|><|assistant|>"
    )


def test_a_chat_option_is_scored_as_the_tokens_sft_trains_on(tok):
    # the option is what an assistant turn holding it trains on: its content after the template's
    # space, then <|end|> (so a model is scored on what it learnt to write)
    conv = [{"role": "user", "content": "Spell the word cat."}, {"role": "assistant", "content": "c a t"}]
    ids, mask = tok.render_chat(conv)
    assert icl.continuation_ids(tok, "c a t", chat=True) == [i for i, m in zip(ids, mask) if m]


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


@pytest.mark.parametrize("chat", [False, True])
def test_a_model_that_memorised_the_answers_scores_one(tok, chat):
    task, n = get_task("capitals"), 12
    ctxs = mc_contexts(tok, task, 2, chat, n)
    answers = [ctx + icl.continuation_ids(tok, task.test[i].answer, chat) for i, ctx in enumerate(ctxs)]
    r = evaluate(Scripted(tok.vocab_size, answers), tok, task, shots=[2], chat=chat, limit=n)
    assert r["acc"] == [1.0] and r["acc_norm"] == [1.0]
    assert r["chance"] == pytest.approx(sum(1 / len(task.test[i].choices) for i in range(n)) / n)


def test_a_model_that_always_picks_the_first_option_scores_how_often_it_is_right(tok):
    task, n = get_task("opposites"), 40
    ctxs = mc_contexts(tok, task, 1, False, n)
    firsts = [ctx + icl.continuation_ids(tok, task.test[i].choices[0], False) for i, ctx in enumerate(ctxs)]
    expected = sum(task.test[i].answer == task.test[i].choices[0] for i in range(n)) / n
    assert 0 < expected < 1  # otherwise this would not tell a right scorer from a wrong one
    r = evaluate(Scripted(tok.vocab_size, firsts), tok, task, shots=[1], limit=n)
    assert r["acc"] == [expected] and r["acc_norm"] == [expected]
    assert [e["prediction"] for e in r["examples"]] == [task.test[i].choices[0] for i in range(5)]


def test_multiple_choice_accuracy_equals_a_slow_reference(model, tok):
    """acc / acc_norm recomputed from one unbatched forward per option (no padding, no sorting)."""
    task, n, k = get_task("plurals", kind="mc"), 12, 2  # options of different byte lengths
    hits = hits_norm = 0
    for i, ctx in enumerate(mc_contexts(tok, task, k, False, n)):
        scored = []
        for c in task.test[i].choices:
            cont = icl.continuation_ids(tok, c, False)
            with torch.no_grad():
                logp = F.log_softmax(model(torch.tensor([ctx + cont]))[0], -1)
            ll = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
            scored.append((c, ll, ll / len(c.encode("utf-8"))))
        hits += max(scored, key=lambda o: o[1])[0] == task.test[i].answer
        hits_norm += max(scored, key=lambda o: o[2])[0] == task.test[i].answer
    r = evaluate(model, tok, task, shots=[k], limit=n, batch_size=3)
    assert r["acc"] == [hits / n] and r["acc_norm"] == [hits_norm / n]


def test_k_shot_prompts_hold_exactly_k_training_examples_and_no_test_example(tok):
    task = get_task("arithmetic")
    train = {(ex.prompt, ex.answer) for ex in task.train}
    test_prompts = {ex.prompt for ex in task.test}
    for i in (0, 7):
        for k in (0, 1, 4, 8):
            *shots, question = tok.decode(icl.build_prompt(tok, task, i, k, False, 10_000)[1:]).split("\n\n")
            assert question == f"Q: {task.test[i].prompt}\nA:"
            pairs = [tuple(s.removeprefix("Q: ").split("\nA: ")) for s in shots]
            assert len(set(pairs)) == k and set(pairs) <= train
            assert not {p for p, _ in pairs} & test_prompts
            chat = tok.decode(icl.build_prompt(tok, task, i, k, True, 10_000))
            assert chat.count("<|user|>") == k + 1 and chat.count("<|assistant|>") == k + 1


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
    assert calls == {"n": 3, "stop": ["\n"], "temperature": 0} and r["heldout"] is None
    r = evaluate(model, tok, task, shots=[0], chat=True)
    assert calls["stop"] is None


def test_a_model_that_memorised_the_answers_generates_them(monkeypatch, tok):
    task = get_task("arithmetic")
    answer_of = {ex.prompt: ex.answer for ex in task.test}

    def memorised(m, t, prompts, max_new_tokens, temperature, stop):
        questions = [t.decode(p).rsplit("Q: ", 1)[1].removesuffix("\nA:") for p in prompts]
        return [f" {answer_of[q]}\nQ: next" for q in questions]

    monkeypatch.setattr("llmlab.generate.generate", memorised)
    r = evaluate(Scripted(tok.vocab_size, []), tok, task, shots=[0, 4], limit=20)
    assert r["acc"] == [1.0, 1.0] and r["heldout"] == task.heldout


def test_real_generation_reports_the_predictions_it_scored(model, tok):
    r = evaluate(model, tok, "arithmetic", shots=[0, 1], chat=False, limit=4)
    hits = [icl.normalize(e["prediction"]) == icl.normalize(e["answer"]) for e in r["examples"]]
    assert r["n"] == len(r["examples"]) == 4 and r["acc"][-1] == sum(hits) / 4
    assert [e["prompt"] for e in r["examples"]] == [ex.prompt for ex in get_task("arithmetic").test[:4]]


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
