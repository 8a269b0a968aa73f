"""The engine as a scheduler: requests joining a running engine decode as if alone, aborts, n samples
from one prefill, forced tokens and tool calls, log-probabilities a training forward agrees with."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.errors import UserError
from llmlab.generate import Engine, SamplingParams

from .conftest import ByteTokenizer, tiny_model

GREEDY = dict(temperature=0, stop_token_ids=[])


def alone(model, prompt, **kw) -> list[int]:
    return Engine(model, max_batch=1).generate_ids([prompt], SamplingParams(**kw))[0].token_ids


def run(
    engine: Engine, arrivals: dict[int, list[tuple[list[int], SamplingParams]]], max_steps: int = 500
) -> dict:
    """Submit arrivals[s] before step s; return {request id: [(index, token, forced)]} and step widths."""
    out: dict[int, list] = {}
    s = 0
    while s in arrivals or engine.has_unfinished() or any(k > s for k in arrivals):
        for prompt, params in arrivals.get(s, []):
            out[engine.add_request(prompt, params)] = []
        for ev in engine.step():
            if ev.token_id is not None:
                out[ev.request_id].append(ev.token_id)
        s += 1
        assert s < max_steps, "the engine never drained"
    return out


@pytest.mark.parametrize("pattern", ["together", "staggered", "late_long"])
def test_requests_joining_a_running_engine_decode_as_if_alone(model, pattern):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [200], [40, 41, 42, 43], list(range(1, 60)), [7] * 20]
    budgets = [12, 30, 7, 20, 9]  # the 59-token prompt nearly fills the 64-token context: it stops at 6
    steps = {"together": [0] * 5, "staggered": [0, 2, 3, 9, 10], "late_long": [0, 0, 1, 15, 4]}[pattern]
    arrivals: dict[int, list] = {}
    for p, b, s in zip(prompts, budgets, steps):
        arrivals.setdefault(s, []).append((p, SamplingParams(max_new_tokens=b, **GREEDY)))
    engine = Engine(model, max_batch=3, prefill_chunk=16)  # 3 slots for 5 requests: some wait
    got = run(engine, arrivals)
    order = [p for s in sorted(arrivals) for p, _ in arrivals[s]]
    budget = {tuple(p): b for p, b in zip(prompts, budgets)}
    for rid, p in enumerate(order):
        assert got[rid] == alone(model, p, max_new_tokens=budget[tuple(p)], **GREEDY), (pattern, rid)
    assert len(got[order.index(prompts[3])]) == 64 - 59 + 1
    assert max(engine.step_widths) <= 3 and not engine.running and not engine.requests


def test_finished_rows_never_compute_again(model):
    engine = Engine(model, max_batch=4)
    for b in (2, 5, 9):
        engine.add_request([1, 2, 3], SamplingParams(max_new_tokens=b, **GREEDY))
    while engine.has_unfinished():
        engine.step()
    # first tokens come from prefill; then 3 rows decode, then 2, then 1
    assert engine.step_widths == [3] * 1 + [2] * 3 + [1] * 4


def test_an_aborted_request_frees_its_slot_and_leaves_the_others_alone(model):
    engine = Engine(model, max_batch=2)
    gone = engine.add_request(
        [9, 9], SamplingParams(max_new_tokens=15, **GREEDY)
    )  # slot 0: the other moves in
    keep = engine.add_request([5, 6, 7], SamplingParams(max_new_tokens=15, **GREEDY))
    waiting = engine.add_request([40, 41], SamplingParams(max_new_tokens=5, **GREEDY))
    toks: dict[int, list] = {keep: [], gone: [], waiting: []}
    for i in range(20):
        if i == 3:
            engine.abort(gone)
            at_abort = len(toks[gone])
            assert len(engine.running) == 1  # its slot is free at once
        for ev in engine.step():
            if ev.token_id is not None:
                toks[ev.request_id].append(ev.token_id)
    assert toks[keep] == alone(model, [5, 6, 7], max_new_tokens=15, **GREEDY)
    assert toks[waiting] == alone(model, [40, 41], max_new_tokens=5, **GREEDY)
    assert len(toks[gone]) == at_abort > 0 and not engine.has_unfinished()
    engine.abort(12345)  # unknown ids are ignored


def test_n_samples_share_one_prefill_and_reproduce_by_seed(model):
    params = SamplingParams(temperature=0.9, top_k=50, seed=7, max_new_tokens=12, stop_token_ids=[])
    engine = Engine(model, max_batch=4)
    rid = engine.add_request([3, 4, 5], params, n=3)
    samples: dict[int, list] = {0: [], 1: [], 2: []}
    while engine.has_unfinished():
        for ev in engine.step():
            samples[ev.index].append(ev.token_id)
            assert ev.request_id == rid
    for i in range(3):  # sample i is the request alone with seed + i
        one = SamplingParams(temperature=0.9, top_k=50, seed=7 + i, max_new_tokens=12, stop_token_ids=[])
        assert samples[i] == Engine(model).generate_ids([[3, 4, 5]], one)[0].token_ids
    assert len({tuple(s) for s in samples.values()}) == 3  # different streams
    assert engine.step_widths[0] == 3  # one prefill, three rows


def test_forced_tokens_continue_as_if_the_prompt_had_them(model):
    engine = Engine(model, max_batch=2)
    rid = engine.add_request([5, 6, 7], SamplingParams(max_new_tokens=10, **GREEDY))
    first = [e.token_id for e in engine.step()]  # from prefill
    first += [e.token_id for e in engine.step()]  # and from the first decode step
    assert len(first) == 2
    engine.force(rid, [100, 101, 102])
    got = []
    while engine.has_unfinished():
        got += [(e.token_id, e.forced) for e in engine.step()]
    assert [t for t, f in got[:3]] == [100, 101, 102] and all(f for _, f in got[:3])
    rest = [t for t, f in got[3:]]
    assert not any(f for _, f in got[3:])
    assert rest == alone(model, [5, 6, 7, *first, 100, 101, 102], max_new_tokens=len(rest), **GREEDY)
    with pytest.raises(UserError, match="no running sample"):
        engine.force(rid, [1])


SPECIALS = [
    "<|bos|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|tool_call|>",
    "<|/tool_call|>",
    "<|tool_result|>",
    "<|/tool_result|>",
]


class ToolTokenizer(ByteTokenizer):
    def __init__(self):
        self.special_tokens = {s: 256 + i for i, s in enumerate(SPECIALS)}
        self.vocab_size = 256 + len(SPECIALS)

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


@pytest.mark.parametrize("raises", [False, True])
def test_a_tool_call_is_answered_with_forced_result_tokens(raises):
    """The prompt opens a call; a logit bias makes the model close it (a trained model would): the hook
    gets the call's text, and its result (or a raising tool's error) is forced in as the tool's turn."""
    tok = ToolTokenizer()
    model = tiny_model(vocab_size=tok.vocab_size, context=128)
    sp = tok.special_tokens
    call = json.dumps({"name": "add", "arguments": {"a": 1}})
    calls = []

    def tool(rid, index, text):
        calls.append((rid, index, text))
        if raises:
            raise RuntimeError("boom")
        return "42"

    engine = Engine(model, tok, max_batch=2)
    prompt = [sp["<|user|>"], 65, sp["<|assistant|>"], sp["<|tool_call|>"], *tok.encode_ordinary(call)]
    params = SamplingParams(
        max_new_tokens=2, temperature=0, logit_bias={sp["<|/tool_call|>"]: 50.0}, stop_token_ids=[]
    )
    rid = engine.add_request(prompt, params, on_tool_call=tool)
    events = []
    while engine.has_unfinished():
        events += engine.step()
    result = '{"error": "RuntimeError: boom"}' if raises else "42"
    expected_forced = [
        sp["<|end|>"],
        sp["<|tool|>"],
        *tok.encode_ordinary("add"),
        sp["<|tool_result|>"],
        *tok.encode_ordinary(result),
        sp["<|/tool_result|>"],
        sp["<|end|>"],
        sp["<|assistant|>"],
    ]
    assert calls == [(rid, 0, call)]
    assert [e.token_id for e in events] == [sp["<|/tool_call|>"], *expected_forced, sp["<|/tool_call|>"]]
    assert [e.forced for e in events] == [False, *[True] * len(expected_forced), False]
    assert events[-1].finished and events[-1].finish_reason == "length"  # forced tokens use no budget


def test_bad_input_is_one_clear_error(model, tok):
    with pytest.raises(UserError, match="max_batch must be >= 1"):
        Engine(model, max_batch=0)
    engine = Engine(model, tok, max_batch=2)
    with pytest.raises(UserError, match="context window is 64"):
        engine.add_request(list(range(65)), SamplingParams())
    with pytest.raises(UserError, match=r"n must be in \[1, max_batch=2\]"):
        engine.add_request([1], SamplingParams(), n=0)
    with pytest.raises(UserError, match="no tool-call tokens"):
        engine.add_request([1], SamplingParams(), on_tool_call=lambda *a: "x")
    assert not engine.has_unfinished()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(1, 30), st.integers(1, 6), st.integers(1, 3), st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_the_queue_always_drains(model, plan):
    """Random arrivals (step, prompt length, budget, n, aborted two steps later) on 3 slots: every request
    ends, every slot comes back, no step runs more rows than there are slots."""
    engine = Engine(model, max_batch=3, prefill_chunk=8)
    ids, aborts = {}, {}
    s = 0
    while s <= 6 or engine.has_unfinished():
        for i, (at, length, budget, n, abort) in enumerate(plan):
            if at == s:
                rid = engine.add_request(
                    [1 + i] * length, SamplingParams(max_new_tokens=budget, temperature=0.8, seed=i), n=n
                )
                ids[rid] = n
                if abort:
                    aborts[s + 2] = [*aborts.get(s + 2, []), rid]
        for rid in aborts.get(s, []):
            engine.abort(rid)
        engine.step()
        s += 1
        assert s < 400 and len(engine.running) <= 3
    assert not engine.requests and not engine.running and not engine.waiting and not engine.prefilling


def test_logprobs_equal_a_training_forward_over_the_finished_sequence(model):
    """What PPO's first ratio rests on: the engine's recorded log p equals log_softmax of one forward over
    prompt + completion, at temperature 1 and 0.7 (and the sampled distribution's, for T alone)."""
    prompt = [5, 6, 7, 8]
    for T in (1.0, 0.7):
        params = SamplingParams(
            temperature=T, seed=3, max_new_tokens=20, logprobs=0, echo=True, stop_token_ids=[]
        )
        c = Engine(model, max_batch=2, prefill_chunk=3).generate_ids([prompt, [9, 9]], [params, params])[0]
        seq = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            logits = model(seq)[0, len(prompt) - 1 : -1]
        target = torch.tensor(c.token_ids)[:, None]
        ref = logits.log_softmax(-1).gather(-1, target)[:, 0]
        ref_sampled = (logits / T).log_softmax(-1).gather(-1, target)[:, 0]
        torch.testing.assert_close(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(c.sample_logprobs), ref_sampled, atol=1e-5, rtol=0)
        with torch.no_grad():
            full = model(torch.tensor([prompt]))[0].log_softmax(-1)
        ref_prompt = full[:-1].gather(-1, torch.tensor(prompt[1:])[:, None])[:, 0]
        assert c.prompt_logprobs[0] is None
        torch.testing.assert_close(torch.tensor(c.prompt_logprobs[1:]), ref_prompt, atol=1e-5, rtol=0)


def test_chunked_prefill_equals_one_prefill(model):
    prompt = list(range(3, 50))
    one = Engine(model, prefill_chunk=256).generate_ids(
        [prompt], SamplingParams(max_new_tokens=10, **GREEDY)
    )[0]
    chunked = Engine(model, prefill_chunk=5).generate_ids(
        [prompt], SamplingParams(max_new_tokens=10, **GREEDY)
    )[0]
    assert one.token_ids == chunked.token_ids


def test_bf16_decoding_agrees_with_fp32(make_model):
    """The stated accuracy of bf16 decoding on CPU: on held-out prompts, the first greedy tokens agree
    with fp32 and the logits differ by at most a few hundredths (bf16 keeps 8 bits of mantissa)."""
    model = make_model(seed=1, init_std=0.02)
    prompts = [[i, i + 1, i + 2, i + 3] for i in range(10, 250, 30)]
    params = SamplingParams(max_new_tokens=4, logprobs=0, **GREEDY)
    fp32 = Engine(model).generate_ids(prompts, params)
    bf16 = Engine(model, dtype=torch.bfloat16).generate_ids(prompts, params)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was
    agree = sum(a.token_ids[0] == b.token_ids[0] for a, b in zip(fp32, bf16))
    assert agree >= len(prompts) - 1
    with torch.no_grad():
        x = torch.tensor(prompts)
        err = (model(x) - Engine(model, dtype=torch.bfloat16).model(x)).abs().max()
    assert err < 0.05


def test_values_float32_cannot_divide_by_sample_like_their_limit(model):
    """temperature / repetition_penalty of 5e-324 are 0 in float32, top_p of 1e-45 too: no NaN step."""
    prompt = [1, 2, 3]
    greedy = alone(model, prompt, max_new_tokens=6, **GREEDY)
    engine = Engine(model, max_batch=4)
    for kw in (dict(temperature=5e-324), dict(temperature=1.0, top_p=1e-45)):
        params = SamplingParams(max_new_tokens=6, stop_token_ids=[], seed=0, **kw)
        assert engine.generate_ids([prompt], params)[0].token_ids == greedy
    strong = SamplingParams(max_new_tokens=6, stop_token_ids=[], repetition_penalty=5e-324, temperature=0)
    out = engine.generate_ids([prompt], strong)[0].token_ids
    assert len(out) == 6 and all(0 <= t < model.cfg.vocab_size for t in out)


def test_events_carry_the_top_logprobs(model):
    engine = Engine(model, max_batch=2)
    engine.add_request([4, 5, 6], SamplingParams(max_new_tokens=4, logprobs=3, **GREEDY))
    events = []
    while engine.has_unfinished():
        events += [e for e in engine.step() if e.token_id is not None]
    ref = model(torch.tensor([[4, 5, 6, *[e.token_id for e in events[:-1]]]]))[0, 2:].log_softmax(-1)
    for j, e in enumerate(events):
        top = torch.topk(ref[j], 3)
        assert [t for t, _ in e.top_logprobs] == top.indices.tolist()
        assert [lp for _, lp in e.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert e.logprob == pytest.approx(ref[j, e.token_id].item(), abs=1e-5)


def test_an_engine_sized_by_generate_ids_takes_longer_requests_later(model):
    engine = Engine(model, max_batch=4)
    engine.generate_ids([[1, 2]], SamplingParams(max_new_tokens=2, **GREEDY))  # sizes it to 1 row × 4
    long = list(range(3, 43))
    rid = engine.add_request(long, SamplingParams(max_new_tokens=5, **GREEDY))
    other = engine.add_request([7, 8], SamplingParams(max_new_tokens=5, **GREEDY))
    out = run_to_end(engine)
    assert out[rid] == alone(model, long, max_new_tokens=5, **GREEDY)
    assert out[other] == alone(model, [7, 8], max_new_tokens=5, **GREEDY)


def run_to_end(engine: Engine) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    while engine.has_unfinished():
        for ev in engine.step():
            if ev.token_id is not None:
                out.setdefault(ev.request_id, []).append(ev.token_id)
    return out
