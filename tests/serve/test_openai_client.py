"""The official `openai` client (sync and async) against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest

openai = pytest.importorskip("openai", reason="the openai client is a test dependency ([dev])")

from .conftest import MODEL, TOOL_MESSAGES, TOOLS  # noqa: E402

HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def chat(client, **kw):
    return client.chat.completions.create(model=MODEL, messages=kw.pop("messages", HI), **kw)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_reply_has_the_openai_shape_and_usage(client):
    r = chat(client, max_tokens=6, temperature=0)
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_matches_the_whole_reply_and_ends_with_usage(client):
    whole = chat(client, max_tokens=12, temperature=0)
    chunks = list(
        chat(client, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n2_gives_two_samples_and_a_seed_reproduces_them(client):
    a = chat(client, max_tokens=10, n=2, seed=7, temperature=1.0)
    b = chat(client, max_tokens=10, n=2, seed=7, temperature=1.0)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.choices[0].message.content != a.choices[1].message.content  # sample i uses seed + i
    other = chat(client, max_tokens=10, n=2, seed=8, temperature=1.0)
    assert [c.message.content for c in other.choices] != [c.message.content for c in a.choices]


def test_stop_string_cuts_the_reply_before_it(client):
    full = chat(client, max_tokens=16, temperature=0, seed=0).choices[0].message.content
    stop = full[5:7]
    assert stop and stop in full
    r = chat(client, max_tokens=16, temperature=0, stop=[stop]).choices[0]
    assert r.message.content == full[: full.index(stop)] and r.finish_reason == "stop"


def test_chat_logprobs_are_the_models_and_greedy_picks_the_top_one(client):
    r = chat(client, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3).choices[0]
    entries = r.logprobs.content
    assert len(entries) == 5 and "".join(e.token for e in entries) == r.message.content
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        assert e.top_logprobs[0].logprob == pytest.approx(
            e.logprob
        )  # greedy: the chosen token is the top one


def test_completions_echo_returns_the_prompt_and_its_logprobs(client):
    r = client.completions.create(
        model=MODEL, prompt="The king of", max_tokens=3, echo=True, logprobs=1, temperature=0
    )
    (choice,) = r.choices
    assert choice.text.startswith("The king of")
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    assert lp.top_logprobs[0] is None  # the first token has no context
    for chosen, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert len(top) == 1 and max(top.values()) >= chosen - 1e-4  # what lm-eval's is_greedy reads
    assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions_take_several_prompts_and_token_ids(client):
    r = client.completions.create(
        model=MODEL, prompt=["The king", "The queen"], max_tokens=2, n=2, temperature=0
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    ids = client.completions.create(model=MODEL, prompt=[60, 61, 62], max_tokens=2, temperature=0)
    assert ids.usage.prompt_tokens == 3


def test_tool_choice_auto_returns_the_parsed_call(client):
    r = chat(client, messages=TOOL_MESSAGES, tools=TOOLS, temperature=0).choices[0]
    assert r.finish_reason == "tool_calls" and not r.message.content
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}


def test_tool_call_streams_as_openai_deltas(client):
    chunks = list(chat(client, messages=TOOL_MESSAGES, tools=TOOLS, temperature=0, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_named_tool_choice_forces_that_call(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = chat(client, messages=TOOL_MESSAGES, tools=TOOLS, tool_choice=choice, temperature=0).choices[0]
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}


def test_tool_results_are_accepted_in_the_conversation(client):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        *TOOL_MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
    ]
    r = chat(client, messages=messages, tools=TOOLS, max_tokens=4, tool_choice="none")
    assert r.choices[0].message.tool_calls is None


def test_async_client_streams_concurrently_and_batching_changes_nothing(base_url, client):
    alone = chat(client, max_tokens=8, temperature=0).choices[0].message.content

    async def one(ac):
        stream = await ac.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def main():
        async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0) as ac:
            return await asyncio.gather(*[one(ac) for _ in range(4)])

    assert asyncio.run(main()) == [alone] * 4


def test_tool_choice_none_keeps_the_model_from_calling(client):
    """The scripted reply to this conversation is a call; with "none" its opening token is banned."""
    r = chat(client, messages=TOOL_MESSAGES, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=10)
    message = r.choices[0].message
    assert message.tool_calls is None and "<|tool_call|>" not in message.content


def test_content_parts_and_developer_messages_are_accepted(client):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
    ]
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    a = chat(client, messages=messages, max_tokens=6, temperature=0)
    b = chat(client, messages=plain, max_tokens=6, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
