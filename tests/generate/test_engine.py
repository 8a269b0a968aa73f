"""Engine invariants: KV-cached = recomputed, batched = one by one, seeds, stops, streaming, logprobs."""

from __future__ import annotations

import warnings

import pytest
import torch

from llmlab.errors import UserError
from llmlab.generate import Engine, SamplingParams, generate
from llmlab.generate.rows import TextTracker


def greedy_by_recomputation(model, ids, n):
    """The slow oracle: run the whole sequence again for every new token, take the argmax."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
    return out


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [200], [40, 41, 42, 43]]


def test_kv_cached_greedy_equals_recomputation(model):
    eng = Engine(model, stop_token_ids=[])
    for p in PROMPTS:
        got = eng.generate_ids([p], SamplingParams(temperature=0, max_new_tokens=20))[0].token_ids
        assert got == greedy_by_recomputation(model, p, 20)


def test_batched_ragged_equals_one_by_one(model):
    eng = Engine(model, stop_token_ids=[])
    params = [
        SamplingParams(temperature=0, max_new_tokens=15),
        SamplingParams(temperature=0.9, seed=3, max_new_tokens=12, top_k=20),
        SamplingParams(
            temperature=1.2, top_p=0.9, seed=4, max_new_tokens=15, repetition_penalty=1.2, logprobs=2
        ),
    ]
    batched = eng.generate_ids(PROMPTS, params)
    for p, prm, got in zip(PROMPTS, params, batched):
        alone = eng.generate_ids([p], prm)[0]
        assert got.token_ids == alone.token_ids
        assert len(got.token_ids) == prm.max_new_tokens
        if prm.logprobs is not None:
            torch.testing.assert_close(
                torch.tensor(got.logprobs), torch.tensor(alone.logprobs), atol=1e-5, rtol=0
            )
    assert batched[0].token_ids == greedy_by_recomputation(model, PROMPTS[0], 15)


@pytest.mark.parametrize("static", [False, True])
def test_ragged_batch_near_the_context_limit_equals_one_by_one(make_model, static):
    """A row whose budget ends early (its prompt nearly fills the window) is fed no position past the
    context while the other rows go on; every row decodes as it would alone."""
    model = make_model(context=32)
    eng = Engine(model, stop_token_ids=[], static=static)
    prompts = [list(range(1, 31)), [7, 8, 9], [40, 41, 42, 43]]
    params = [
        SamplingParams(temperature=0, max_new_tokens=100),
        SamplingParams(temperature=0, max_new_tokens=100),
        SamplingParams(seed=3, max_new_tokens=12, top_k=20),
    ]
    batched = eng.generate_ids(prompts, params)
    assert [len(c.token_ids) for c in batched] == [3, 30, 12]  # to the end of the window, or the budget
    assert [c.token_ids for c in batched] == [
        eng.generate_ids([p], prm)[0].token_ids for p, prm in zip(prompts, params)
    ]


def test_engine_leaves_the_callers_model_in_its_own_mode(make_model, tok):
    """A model in training mode (dropout on) decodes without dropout and is left in training mode, also
    between streamed steps and after beam search / speculative decoding; a submodule the caller put in
    eval mode stays there."""
    model = make_model(dropout=0.5).train()
    model.blocks[0].eval()
    modes = [m.training for m in model.modules()]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    kinds = [dict(num_beams=2), dict(draft_model=make_model(seed=9, n_layer=1).train())]
    got = [
        [c.token_ids for c in Engine(model, stop_token_ids=[], static=s).generate_ids(PROMPTS, params)]
        for s in (False, True)
    ]
    for _ in Engine(model, stop_token_ids=[]).stream_ids(PROMPTS, params):
        assert [m.training for m in model.modules()] == modes
    special = [generate(model, tok, "ab", max_new_tokens=6, temperature=0, **kw) for kw in kinds]
    assert [m.training for m in model.modules()] == modes and kinds[1]["draft_model"].training
    model.eval()
    want = [c.token_ids for c in Engine(model, stop_token_ids=[]).generate_ids(PROMPTS, params)]
    assert got == [want, want]  # dropout was off
    assert special == [generate(model, tok, "ab", max_new_tokens=6, temperature=0, **kw) for kw in kinds]


def test_same_seed_same_sample_and_batch_seeds(model, tok):
    a = generate(model, tok, "hello", max_new_tokens=12, seed=7)
    b = generate(model, tok, "hello", max_new_tokens=12, seed=7)
    c = generate(model, tok, "hello", max_new_tokens=12, seed=8)
    assert a == b and a != c
    # Row i of a batch uses seed + i: the batch equals single calls.
    assert generate(model, tok, ["hello", "x"], max_new_tokens=12, seed=7) == [
        a,
        generate(model, tok, "x", max_new_tokens=12, seed=8),
    ]


def test_logprobs_are_the_models(model):
    out = Engine(model, stop_token_ids=[]).generate_ids(
        [PROMPTS[0]], SamplingParams(seed=1, max_new_tokens=6, logprobs=3)
    )[0]
    full = torch.tensor([PROMPTS[0] + out.token_ids])
    with torch.no_grad():
        logp = model(full)[0].log_softmax(-1)
    n = len(PROMPTS[0])
    want = [float(logp[n - 1 + i, t]) for i, t in enumerate(out.token_ids)]
    torch.testing.assert_close(torch.tensor(out.logprobs), torch.tensor(want), atol=1e-5, rtol=0)
    top_ids = [[i for i, _ in row] for row in out.top_logprobs]
    assert top_ids == logp[n - 1 : n - 1 + 6].topk(3, -1).indices.tolist()


def test_stop_token_ends_the_row_and_is_not_output(model, tok):
    eng = Engine(model, tok)
    p = tok.encode("hi")
    free = eng.generate_ids([p], SamplingParams(temperature=0, max_new_tokens=10, stop_token_ids=[]))[0]
    stop_at = free.token_ids[3]
    out = eng.generate_ids([p], SamplingParams(temperature=0, max_new_tokens=10, stop_token_ids=[stop_at]))[0]
    first = free.token_ids.index(stop_at)
    assert out.token_ids == free.token_ids[:first]
    assert out.finish_reason == "stop" and out.stop_reason == stop_at
    assert free.finish_reason == "length"


def test_stop_string_across_token_boundaries(model, tok):
    free = generate(model, tok, "ab", max_new_tokens=20, temperature=0, stop_token_ids=[])
    stop = free[5:8]  # three byte tokens: the match spans token boundaries
    assert len(stop.encode()) >= 2
    cut = free.index(stop)
    assert (
        generate(model, tok, "ab", max_new_tokens=20, temperature=0, stop=[stop], stop_token_ids=[])
        == free[:cut]
    )
    deltas = list(
        generate(
            model, tok, "ab", max_new_tokens=20, temperature=0, stop=[stop], stop_token_ids=[], stream=True
        )
    )
    assert "".join(deltas) == free[:cut]


def test_text_tracker_never_splits_utf8_and_holds_back_stop_prefixes(tok):
    text = "héllo wörld ✓ ok STOP never"
    tr = TextTracker(tok, ["STOP"])
    deltas = []
    for b in text.encode("utf-8"):
        tr.push(b)
        d = tr.delta(final=tr.hit is not None)
        assert "\ufffd" not in d
        deltas.append(d)
        if tr.hit:
            break
        assert not tr.text[tr.emitted :] or "STOP".startswith(tr.text[tr.emitted :].lstrip()[:1] or "S")
    assert "".join(deltas) == "héllo wörld ✓ ok "
    assert all("S" not in d for d in deltas)  # 'S' of STOP was held back, then cut


def test_stream_deltas_join_to_the_text(model, tok):
    full = generate(model, tok, "hé", max_new_tokens=30, seed=2)
    assert "".join(generate(model, tok, "hé", max_new_tokens=30, seed=2, stream=True)) == full
    pairs = list(generate(model, tok, ["a", "bcd"], max_new_tokens=10, seed=2, stream=True))
    texts = generate(model, tok, ["a", "bcd"], max_new_tokens=10, seed=2)
    for i in range(2):
        assert "".join(d for j, d in pairs if j == i) == texts[i]


def test_context_window_and_bad_input(model, tok):
    ctx = model.cfg.context
    with pytest.raises(UserError, match="context window"):
        generate(model, tok, "x" * (ctx + 1), max_new_tokens=3)
    out = generate(model, tok, "x" * (ctx + 1), max_new_tokens=3, truncate=True, temperature=0)
    assert isinstance(out, str)
    # Generation stops at the end of the window.
    o = Engine(model, stop_token_ids=[]).generate_ids([[1] * (ctx - 2)], SamplingParams(max_new_tokens=50))[0]
    assert len(o.token_ids) == 3 and o.finish_reason == "length"
    with pytest.raises(UserError, match="top_p"):
        generate(model, tok, "x", top_p=0)
    with pytest.raises(UserError, match="num_beams"):
        generate(model, tok, "x", num_beams=0)


def test_greedy_equals_transformers_generate(tmp_path, make_model):
    transformers = pytest.importorskip("transformers")
    from llmlab.model.hf import export_hf

    model = make_model(seed=4)
    export_hf(model, None, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    for p in PROMPTS:
        with torch.no_grad():
            theirs = hf.generate(
                torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, len(p) :].tolist()
        ours = (
            Engine(model, stop_token_ids=[])
            .generate_ids([p], SamplingParams(temperature=0, max_new_tokens=12))[0]
            .token_ids
        )
        assert ours == theirs


def test_static_step_equals_dynamic_step(model):
    """The fixed-shape step (what CUDA captures in a graph) decodes exactly like the plain one."""
    params = [
        SamplingParams(temperature=0, max_new_tokens=14, logprobs=0),
        SamplingParams(temperature=0, max_new_tokens=10, repetition_penalty=1.3, logprobs=0),
        SamplingParams(temperature=0, max_new_tokens=14, top_k=3, logprobs=0),
    ]
    dyn = Engine(model, stop_token_ids=[], static=False).generate_ids(PROMPTS, params)
    sta = Engine(model, stop_token_ids=[], static=True).generate_ids(PROMPTS, params)
    for a, b in zip(dyn, sta):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_static_step_sampling_is_seeded_per_row(model):
    eng = Engine(model, stop_token_ids=[], static=True)
    params = [SamplingParams(seed=1, max_new_tokens=12, top_p=0.9), SamplingParams(seed=2, max_new_tokens=12)]
    batched = eng.generate_ids(PROMPTS[:2], params)
    assert [c.token_ids for c in batched] == [
        eng.generate_ids([p], prm)[0].token_ids for p, prm in zip(PROMPTS[:2], params)
    ]
    other = eng.generate_ids(PROMPTS[:1], SamplingParams(seed=3, max_new_tokens=12, top_p=0.9))[0]
    assert other.token_ids != batched[0].token_ids


def test_compiled_cpu_step_equals_eager_and_follows_weight_changes(model):
    """The inductor-compiled step (frozen weights, C++ GEMM template) decodes like the eager engine on a
    ragged batch with mixed settings, for other cache lengths without recompiling, also when a row's
    budget ends at the context window long before the others; after an in-place weight update it
    recompiles rather than keep the frozen old weights, and drops no other compiled function."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    from torch._dynamo.utils import counters

    from llmlab.generate.compiled import compiled_step

    params = [
        SamplingParams(temperature=0, max_new_tokens=9, logprobs=0),
        SamplingParams(temperature=0, max_new_tokens=6, repetition_penalty=1.3, logprobs=0),
        SamplingParams(seed=5, max_new_tokens=3, top_k=3, logprobs=0),
    ]  # budgets 9, 6, 3: running rows go 3 → 2 → 1, so the first check compiles every bucket

    def check(prompts=PROMPTS):
        eager = Engine(model, stop_token_ids=[]).generate_ids(prompts, params)
        compiled = Engine(model, stop_token_ids=[], compile=True).generate_ids(prompts, params)
        for a, b in zip(eager, compiled):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
        return [c.token_ids for c in compiled]

    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    outside = torch.compile(lambda x: x * 2 + 1, backend=counting_backend)  # e.g. a compiled loss
    outside(torch.ones(3))
    before = check()
    graphs = counters["stats"]["unique_graphs"]
    params[0] = SamplingParams(temperature=0, max_new_tokens=4, logprobs=0)  # another cache length
    check()
    near_the_end = check([[1] * (model.cfg.context - 2), [200], [40, 41, 42, 43]])
    assert len(near_the_end[0]) == 3 and len(near_the_end[2]) == 3
    assert counters["stats"]["unique_graphs"] == graphs  # the cache length is symbolic: no recompile
    old_step = compiled_step(model, model.rope_cos.device)
    assert _debug_get_cache_entry_list(old_step.code)  # the compiled graph lives on the step's own code
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.5)
    params[0] = SamplingParams(temperature=0, max_new_tokens=9, logprobs=0)
    assert check() != before
    assert not _debug_get_cache_entry_list(old_step.code)  # the old weights' graph was freed
    outside(torch.ones(3))
    assert len(compiles) == 1  # the engine's recompile left the rest of the process alone


def _compile_that_raises(error: Exception):
    """A stand-in for torch.compile whose compiled function raises `error` when first called."""

    def fake_compile(fn, **kw):
        def run(*args):
            raise error

        return run

    return fake_compile


def test_compile_failure_falls_back_to_eager_with_a_warning(model, monkeypatch):
    """A machine without a C++ compiler (or any compile error) still decodes, eagerly, and says why."""
    import torch._dynamo

    failure = torch._dynamo.exc.BackendCompilerFailed(print, RuntimeError("no C++ compiler found"), None)
    monkeypatch.setattr(torch, "compile", _compile_that_raises(failure))
    params = SamplingParams(temperature=0, max_new_tokens=6)
    with pytest.warns(UserWarning, match="RuntimeError: no C\\+\\+ compiler found"):
        out = Engine(model, stop_token_ids=[], compile=True).generate_ids(PROMPTS, params)
    assert [c.token_ids for c in out] == [
        c.token_ids for c in Engine(model, stop_token_ids=[]).generate_ids(PROMPTS, params)
    ]


def test_a_runtime_error_in_the_first_compiled_call_is_raised_as_itself(model, monkeypatch):
    """Only a compilation failure falls back to eager; the step's own error (here a bad index, on CUDA a
    device-side assert) is not reported as a compile failure and hidden by an eager rerun."""
    bad_index = IndexError("index 70 is out of bounds for dimension 0 with size 64")
    monkeypatch.setattr(torch, "compile", _compile_that_raises(bad_index))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(IndexError, match="out of bounds"):
            Engine(model, stop_token_ids=[], compile=True).generate_ids(
                PROMPTS, SamplingParams(temperature=0, max_new_tokens=6)
            )
