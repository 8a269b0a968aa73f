"""The chat template: rendering, the loss mask, validation, and parity with HF apply_chat_template."""

from __future__ import annotations

import pytest

from llmlab.errors import UserError
from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.chat import (
    CHAT_TEMPLATE_JINJA,
    parse_assistant,
    render_chat,
    render_for_generation,
    render_text,
)

TEXT = (
    "Be brief. What is 2 + 2? Four. Hello there, how are you? The weather in Oslo is cold today. "
    "Spell the word cat. c a t. Ünïcödé, naïve café, 東京 and emoji 🎉 too. "
) * 20

TOOL_CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo? Ünïcödé 東京"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo", "é": 1}}}
        ],
    },
    {"role": "tool", "name": "weather", "content": '{"temp": 3}'},
    {"role": "tool", "content": "second result"},
    {"role": "assistant", "content": "3 degrees."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "tool_calls": [{"name": "noop", "arguments": {}}]},
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(TEXT, 350)


def test_render_text_layout():
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert render_text(conv) == "<|bos|><|user|>Hi<|end|><|assistant|> Hello<|end|>"
    assert render_text(conv[:1], add_generation_prompt=True) == "<|bos|><|user|>Hi<|end|><|assistant|>"
    assert render_text(TOOL_CONV[2:4]).endswith(
        '<|assistant|> Let me check.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo", "é": 1}}'
        '<|/tool_call|><|end|><|tool|>weather<|tool_result|>{"temp": 3}<|/tool_result|><|end|>'
    )


def test_ids_decode_to_the_text(tok):
    ids, mask = render_chat(tok, TOOL_CONV)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == render_text(TOOL_CONV)
    assert tok.render_chat(TOOL_CONV) == (ids, mask)  # the Tokenizer method delegates


def test_mask_is_exactly_what_the_assistant_writes(tok):
    ids, mask = render_chat(tok, TOOL_CONV)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    expected = (
        ' Let me check.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo", "é": 1}}<|/tool_call|>'
        '<|end|> 3 degrees.<|end|><|tool_call|>{"name": "noop", "arguments": {}}<|/tool_call|><|end|>'
    )
    assert trained == expected
    # and the untrained tokens are everything else, in order
    untrained = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert untrained.startswith("<|bos|><|system|>Be brief.<|end|><|user|>")
    assert '<|tool|>weather<|tool_result|>{"temp": 3}<|/tool_result|><|end|>' in untrained


def test_generation_prompt_ends_with_assistant_header(tok):
    ids = render_for_generation(tok, TOOL_CONV[:2])
    assert ids[-1] == tok.special_tokens["<|assistant|>"]
    assert ids[0] == tok.special_tokens["<|bos|>"]
    assert tok.render_for_generation(TOOL_CONV[:2]) == ids
    # the prompt is a prefix of the rendered full conversation
    full, _ = render_chat(tok, TOOL_CONV[:3])
    assert full[: len(ids)] == ids


def test_a_reply_opening_with_a_prompt_word_has_the_prompt_tokens(tok):
    # the dummy prefix: without the space, "bunuvim" at the reply's start is other tokens than
    # " bunuvim" in the question, and a repeat would have to translate before it copies
    word = " bunuvim"
    assert tok.encode_ordinary(word.strip()) != tok.encode_ordinary(word)  # why the space is there
    ids, mask = render_chat(
        tok, [{"role": "user", "content": f"Repeat{word}"}, {"role": "assistant", "content": word.strip()}]
    )
    reply = [i for i, m in zip(ids, mask) if m][:-1]  # without <|end|>
    assert reply == tok.encode_ordinary(word)
    assert ids[: ids.index(tok.special_tokens["<|end|>"])][-len(reply) :] == reply  # the question's tokens
    assert parse_assistant(tok.decode(reply))["content"] == "bunuvim"


def test_special_token_text_in_content_is_ordinary_text(tok):
    ids, _ = render_chat(
        tok, [{"role": "user", "content": "say <|end|> now"}, {"role": "assistant", "content": "ok"}]
    )
    assert ids.count(tok.special_tokens["<|end|>"]) == 2  # the user's and the assistant's, not the typed one


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "non-empty list"),
        ([{"role": "assistant", "content": "hi"}], "cannot come at the start"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 1: a user message cannot come after a user",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}],
            "message 1: empty assistant turn",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "tool", "content": "r"},
            ],
            "tool message cannot come after a assistant",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
            "system message cannot come",
        ),
        ([{"role": "robot", "content": "a"}], "unknown role 'robot'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"role": "user", "content": "a"}], "must end with an assistant turn"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"arguments": {}}]}],
            "needs a string 'name'",
        ),
    ],
)
def test_bad_conversations_are_user_errors(tok, messages, match):
    with pytest.raises(UserError, match=match):
        render_chat(tok, messages)


def test_generation_needs_a_user_or_tool_turn_last(tok):
    with pytest.raises(UserError, match="must end with a user or tool message"):
        render_for_generation(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_tokenizer_without_chat_specials_is_a_user_error():
    plain = Tokenizer.train(TEXT, 300, special_tokens={"<|endoftext|>": 299})
    with pytest.raises(UserError, match=r"no <\|bos\|> special token"):
        render_chat(plain, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


CONVERSATIONS = [
    TOOL_CONV,
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How are you?"}],
    [
        {"role": "system", "content": "Spell."},
        {"role": "user", "content": "cat"},
        {"role": "assistant", "content": "c a t"},
        {"role": "user", "content": "  spaces  \n\n newlines "},
        {"role": "assistant", "content": " 東京 🎉\n"},
    ],
]


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather for a city. Ünïcödé",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALC = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
STRING_ARGS_CONV = [  # OpenAI's wire form: arguments as a JSON string, ids on calls and results
    {"role": "user", "content": "Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "calculator", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "3"},
    {"role": "tool", "tool_call_id": "c2", "content": "4"},
    {"role": "assistant", "content": "3 degrees."},
]


@pytest.mark.parametrize(
    ("conv", "tools"),
    [(c, None) for c in CONVERSATIONS]
    + [(TOOL_CONV, [WEATHER, CALC]), (CONVERSATIONS[1], [WEATHER]), (STRING_ARGS_CONV, [WEATHER, CALC])],
)
def test_hf_apply_chat_template_matches(tok, tmp_path, conv, tools):
    transformers = pytest.importorskip("transformers")
    tok.export_hf(tmp_path / "tokenizer.json")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf.chat_template = CHAT_TEMPLATE_JINJA
    ids, mask = render_chat(tok, conv, tools)
    out = hf.apply_chat_template(
        conv, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert list(out["input_ids"]) == ids
    assert list(out["assistant_masks"]) == mask
    prompt = conv[:-1] if conv[-1]["role"] == "assistant" else conv
    hf_prompt = hf.apply_chat_template(
        prompt, tools=tools, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    assert list(hf_prompt["input_ids"]) == render_for_generation(tok, prompt, tools)
    assert hf.apply_chat_template(conv, tools=tools, tokenize=False) == render_text(conv, tools=tools)


def test_tools_are_listed_in_the_system_turn():
    with_system = render_text([{"role": "system", "content": "Be brief."}, *STRING_ARGS_CONV], tools=[CALC])
    assert with_system.startswith(
        '<|bos|><|system|>Be brief.\n\n# Tools\n{"type": "function", "function": {"name": "calculator", '
        '"parameters": {"type": "object"}}}<|end|><|user|>Oslo?'
    )
    alone = render_text(STRING_ARGS_CONV, tools=[CALC])
    assert alone.startswith('<|bos|><|system|># Tools\n{"type": "function"')
    # string arguments are written as given, the same text as object arguments
    assert '<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo"}}<|/tool_call|>' in alone
    assert render_text(STRING_ARGS_CONV) == render_text(STRING_ARGS_CONV, tools=[])


def test_bad_tools_are_user_errors(tok):
    with pytest.raises(UserError, match=r"tools\[1\]: a tool schema needs a string 'name'"):
        render_for_generation(tok, [{"role": "user", "content": "a"}], tools=[CALC, {"function": {}}])


def _call(k, name, args):
    return {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": args}}


@pytest.mark.parametrize(
    ("text", "content", "calls", "n_errors"),
    [
        ("Just text.<|end|>", "Just text.", [], 0),
        (
            'Let me check.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo"}}<|/tool_call|><|end|>',
            "Let me check.",
            [_call(0, "weather", '{"city": "Oslo"}')],
            0,
        ),
        (  # parallel calls; arguments given as a JSON string; arguments omitted
            '<|tool_call|>{"name": "a", "arguments": "{\\"x\\": 1}"}<|/tool_call|>'
            '<|tool_call|>{"name": "b"}<|/tool_call|>',
            "",
            [_call(0, "a", '{"x": 1}'), _call(1, "b", "{}")],
            0,
        ),
        (
            '<|tool_call|>{"name": "a", "arguments": {<|/tool_call|>',
            '<|tool_call|>{"name": "a", "arguments": {<|/tool_call|>',
            [],
            1,
        ),
        (
            '<|tool_call|>{"arguments": {}}<|/tool_call|>',
            '<|tool_call|>{"arguments": {}}<|/tool_call|>',
            [],
            1,
        ),
        (
            '<|tool_call|>{"name": "a", "arguments": [1]}<|/tool_call|>',
            '<|tool_call|>{"name": "a", "arguments": [1]}<|/tool_call|>',
            [],
            1,
        ),
        ('ok <|tool_call|>{"name": "a"', 'ok <|tool_call|>{"name": "a"', [], 1),
        (  # a good call after a bad one keeps its own number
            '<|tool_call|>nope<|/tool_call|><|tool_call|>{"name": "b", "arguments": {}}<|/tool_call|>',
            "<|tool_call|>nope<|/tool_call|>",
            [_call(0, "b", "{}")],
            1,
        ),
    ],
)
def test_parse_assistant(text, content, calls, n_errors):
    out = parse_assistant(text)
    assert out["content"] == content
    assert out["tool_calls"] == calls
    assert len(out["errors"]) == n_errors


def test_parsed_calls_render_back_to_the_same_text():
    text = ' Hm.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo", "n": 2}}<|/tool_call|>'
    out = parse_assistant(text)  # a reply as the model writes it: the template's space first
    conv = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": out["content"], "tool_calls": out["tool_calls"]},
    ]
    assert render_text(conv).endswith("<|assistant|>" + text + "<|end|>")
