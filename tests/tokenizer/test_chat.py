"""The chat template: rendering, the loss mask, validation, and parity with HF apply_chat_template."""

from __future__ import annotations

import pytest

from llmlab.errors import UserError
from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.chat import CHAT_TEMPLATE_JINJA, render_chat, render_for_generation, render_text

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
    assert render_text(conv) == "<|bos|><|user|>Hi<|end|><|assistant|>Hello<|end|>"
    assert render_text(conv[:1], add_generation_prompt=True) == "<|bos|><|user|>Hi<|end|><|assistant|>"
    assert render_text(TOOL_CONV[2:4]).endswith(
        '<|assistant|>Let me check.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo", "é": 1}}'
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
        'Let me check.<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo", "é": 1}}<|/tool_call|>'
        '<|end|>3 degrees.<|end|><|tool_call|>{"name": "noop", "arguments": {}}<|/tool_call|><|end|>'
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


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_hf_apply_chat_template_matches(tok, tmp_path, conv):
    transformers = pytest.importorskip("transformers")
    tok.export_hf(tmp_path / "tokenizer.json")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf.chat_template = CHAT_TEMPLATE_JINJA
    ids, mask = render_chat(tok, conv)
    out = hf.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(out["input_ids"]) == ids
    assert list(out["assistant_masks"]) == mask
    prompt = conv[:-1] if conv[-1]["role"] == "assistant" else conv
    hf_prompt = hf.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert list(hf_prompt["input_ids"]) == render_for_generation(tok, prompt)
    assert hf.apply_chat_template(conv, tokenize=False) == render_text(conv)
