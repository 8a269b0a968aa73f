"""Decoding: sampling strategies, beam search, speculative decoding, a batched KV-cache engine.

    from llmlab.generate import generate
    text = generate(model, tok, "Once upon a time", max_new_tokens=50, temperature=0.8, top_p=0.95, seed=0)
    texts = generate(model, tok, ["a", "bc"], temperature=0)          # a batch, greedy
    for delta in generate(model, tok, "Hi", stream=True): print(delta, end="")

Lower level (token ids in, ids + log-probabilities out, per-row settings): `Engine`, `SamplingParams`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from llmlab.errors import UserError
from llmlab.generate.beam import Hypothesis, beam_search
from llmlab.generate.engine import Engine
from llmlab.generate.rows import Completion, RequestEvent, decode_until_stop, default_stop_token_ids
from llmlab.generate.sampling import SamplingParams, check_logit_bias
from llmlab.generate.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "Completion",
    "Engine",
    "Hypothesis",
    "RequestEvent",
    "SamplingParams",
    "SpeculativeResult",
    "beam_search",
    "decode_until_stop",
    "default_stop_token_ids",
    "generate",
    "speculative_generate",
]


def generate(
    model,
    tok,
    prompt_or_prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    num_beams: int = 1,
    seed: int | None = None,
    stop: Sequence[str] | str | None = None,
    stream: bool = False,
    *,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: dict[int, float] | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    stop_token_ids: Sequence[int] | None = None,
    draft_model=None,
    num_draft: int = 4,
    truncate: bool = False,
    compile: bool = False,
    tools: Sequence | None = None,
    max_tool_rounds: int = 8,
):
    """Generate the continuation of one prompt (→ str) or of a list of prompts (→ list[str]); new text only.

    A prompt is a string (special tokens like <|user|> are recognised) or a list of token ids.
    temperature=0 is greedy. Row i of a batch uses seed + i, so a batch gives the same texts as
    calling generate on each prompt alone with those seeds. stop: stop strings (None or [] = none);
    stop tokens (<|end|>, <|bos|>, ...) always stop unless `stop_token_ids` replaces them.
    num_beams > 1: beam search (deterministic). draft_model: speculative decoding (one prompt).
    stream=True: an iterator of text deltas (for a batch: of (index, delta) pairs).
    compile=True: compile the decode step (see `Engine`); the compiled step is reused by later calls
    with the same model (and weights) and batch size in this process.
    logit_bias: {token id: bias added to its logit}; every id must be in the model's vocabulary.
    tools: Tools or built-in names ("calculator"); a plain-text prompt becomes a user turn with the tools
    in the system turn, and each tool call the model closes is run and its result forced into the turn
    (at most max_tool_rounds per prompt; see llmlab.systems.engine_tools). The text includes the calls.
    """
    if num_beams < 1:
        raise UserError(f"num_beams must be >= 1, got {num_beams}")
    single = isinstance(prompt_or_prompts, str) or (
        len(prompt_or_prompts) > 0 and all(isinstance(x, int) for x in prompt_or_prompts)
    )
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    engine = Engine(model, tok, stop_token_ids=stop_token_ids, compile=compile)
    base = dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        logit_bias=check_logit_bias(logit_bias or {}, model.cfg.vocab_size),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        stop_token_ids=stop_token_ids,
    )
    params = [
        SamplingParams(**base, seed=None if seed is None else seed + i).validate()
        for i in range(len(prompts))
    ]
    if tools:
        from llmlab.systems.engine_tools import chat_prompts, run_with_tools

        if num_beams > 1 or draft_model is not None:
            raise UserError(
                "tools: tool calls run with sampling or greedy decoding, not beams or a draft model"
            )
        prompts = chat_prompts(tok, prompts, tools)
    ids = [engine.encode(p, truncate=truncate, max_new_tokens=max_new_tokens) for p in prompts]
    if tools:
        return run_with_tools(engine, ids, params, tools, single, stream, max_tool_rounds)

    if num_beams > 1 or draft_model is not None:
        texts = [
            _special(engine, model, draft_model, p, prm, num_beams, num_draft, length_penalty, early_stopping)
            for p, prm in zip(ids, params)
        ]
        if stream:
            return iter(texts if single else list(enumerate(texts)))
        return texts[0] if single else texts

    if stream:
        return _stream(engine, ids, params, single)
    outs = engine.generate_ids(ids, params)
    texts = [o.text if tok is not None else "" for o in outs]
    return texts[0] if single else texts


def _stream(engine: Engine, ids, params, single: bool) -> Iterator:
    first = engine.next_id  # the prompts' request ids are first, first + 1, ...
    for events in engine.stream_ids(ids, params):
        for ev in events:
            if ev.text_delta:
                yield ev.text_delta if single else (ev.request_id - first, ev.text_delta)


def _special(
    engine: Engine,
    model,
    draft_model,
    ids,
    params: SamplingParams,
    num_beams: int,
    num_draft: int,
    length_penalty: float,
    early_stopping: bool,
) -> str:
    """Beam search or speculative decoding for one prompt → text (stop strings applied to the text)."""
    stops = params.stop_token_ids if params.stop_token_ids is not None else engine.stop_token_ids
    if num_beams > 1:
        hyp = beam_search(
            model, ids, num_beams, params.max_new_tokens, length_penalty, early_stopping, 1, stops
        )[0]
        token_ids = hyp.token_ids
    else:
        token_ids = speculative_generate(model, draft_model, ids, params, num_draft, stops).token_ids
    return decode_until_stop(engine.tok, token_ids, params.stop) if engine.tok is not None else ""
