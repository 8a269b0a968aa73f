"""The Tokenizer object: files, special tokens, decoding, streaming, HF export, properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.errors import UserError
from llmlab.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer, bpe

from .conftest import CODE, ENGLISH, UNICODE, VARIED, WHITESPACE

NO_SURROGATES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def test_vocab_layout(mixed_tok):
    n = len(mixed_tok.merges)
    assert n == 600 - 256 - len(DEFAULT_SPECIAL_TOKENS)
    assert mixed_tok.vocab_size == 600
    assert list(mixed_tok.special_tokens) == list(DEFAULT_SPECIAL_TOKENS)
    assert sorted(mixed_tok.special_tokens.values()) == list(range(256 + n, 600))
    for i, (a, b) in enumerate(mixed_tok.merges):
        assert a < 256 + i and b < 256 + i
        assert mixed_tok.token_bytes(256 + i) == mixed_tok.token_bytes(a) + mixed_tok.token_bytes(b)


def test_save_load_round_trip(mixed_tok, tmp_path):
    path = tmp_path / "tok.json"
    mixed_tok.save(path)
    obj = json.loads(path.read_text())
    assert obj["format"] == "llmlab-bpe" and obj["version"] == 1 and obj["pattern_name"] == "gpt4"
    tok = Tokenizer.load(path)
    assert tok.merges == mixed_tok.merges
    assert tok.special_tokens == mixed_tok.special_tokens
    assert tok.pattern == mixed_tok.pattern
    assert tok.fingerprint == mixed_tok.fingerprint
    for text in VARIED:
        assert tok.encode_ordinary(text) == mixed_tok.encode_ordinary(text)


def test_fingerprint_is_sha256_of_the_file_and_changes_with_content(mixed_tok, tmp_path):
    import hashlib

    path = tmp_path / "tok.json"
    mixed_tok.save(path)
    assert mixed_tok.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    other = Tokenizer.train([ENGLISH, CODE], 300, engine="python", show_progress=False)
    assert other.fingerprint != mixed_tok.fingerprint
    again = Tokenizer.train([ENGLISH, CODE], 300, engine="python", show_progress=False)
    assert again.fingerprint == other.fingerprint  # deterministic training


def test_special_tokens_follow_tiktoken_semantics(mixed_tok):
    text = "hi <|end|> there"
    with pytest.raises(UserError, match="disallowed special token '<\\|end\\|>'"):
        mixed_tok.encode(text)
    end = mixed_tok.special_tokens["<|end|>"]
    assert end in mixed_tok.encode(text, allowed_special="all")
    assert end in mixed_tok.encode(text, allowed_special={"<|end|>"})
    with pytest.raises(UserError):
        mixed_tok.encode(text, allowed_special={"<|bos|>"})
    plain = mixed_tok.encode_ordinary(text)
    assert end not in plain and mixed_tok.decode(plain) == text
    assert mixed_tok.encode(text, disallowed_special=()) == plain
    assert mixed_tok.decode([end]) == "<|end|>"


def test_encode_batch_equals_one_by_one(mixed_tok):
    texts = [ENGLISH, CODE, UNICODE, WHITESPACE, "", "<|bos|>x"] * 3
    assert mixed_tok.encode_batch(texts, allowed_special="all") == [
        mixed_tok.encode(t, allowed_special="all") for t in texts
    ]
    with pytest.raises(UserError):
        mixed_tok.encode_batch(texts)


def test_decode_replaces_invalid_utf8_and_rejects_unknown_ids(mixed_tok):
    e_acute = "é".encode()  # two bytes: 0xC3 0xA9
    assert mixed_tok.decode_bytes([e_acute[0]]) == b"\xc3"
    assert mixed_tok.decode([e_acute[0]]) == "\ufffd"
    assert mixed_tok.decode([e_acute[0], e_acute[1]]) == "é"
    with pytest.raises(UserError, match="token id 600 is not in this tokenizer"):
        mixed_tok.decode([1, 600])


def test_stream_decoder_never_splits_a_character(mixed_tok):
    ids = list("👍é".encode())  # byte tokens: 4 + 2 bytes
    d = mixed_tok.stream_decoder()
    deltas = [d.push(i) for i in ids]
    assert deltas == ["", "", "", "👍", "", "é"]
    assert d.flush() == ""
    d = mixed_tok.stream_decoder()
    assert d.push(0xF0) == "" and d.flush() == "\ufffd"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=NO_SURROGATES)
def test_property_decode_encode_round_trip(mixed_tok, text):
    assert mixed_tok.decode(mixed_tok.encode_ordinary(text)) == text
    assert mixed_tok.decode(mixed_tok.encode(text, allowed_special="all")) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=100))
def test_property_reference_encoder_equals_tiktoken(mixed_tok, text):
    assert bpe.encode_ordinary_reference(
        text, mixed_tok.mergeable_ranks, mixed_tok.pattern
    ) == mixed_tok.encode_ordinary(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(0, 599), max_size=60))
def test_property_stream_deltas_concatenate_to_decode(mixed_tok, ids):
    d = mixed_tok.stream_decoder()
    assert "".join(d.push(i) for i in ids) + d.flush() == mixed_tok.decode(ids)


def test_export_hf_encodes_identically(mixed_tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path / "tokenizer.json"
    mixed_tok.export_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in [t for t in VARIED if "\ud800" not in t] + ["<|bos|>hello<|end|>\n<|user|> x"]:
        assert hf.encode(text).ids == mixed_tok.encode(text, allowed_special="all"), text
        assert hf.decode(hf.encode(text).ids, skip_special_tokens=False) == text
    assert hf.get_vocab_size() == mixed_tok.vocab_size


def test_digits_pattern_gives_one_token_per_digit_and_exports_to_hf(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    texts = [f"What is {a} x {b}? It is {a * b}." for a in range(100, 400, 7) for b in range(12, 99, 5)]
    tok = Tokenizer.train(texts, 400, pattern="digits", show_progress=False)
    text = "What is 409 x 32? It is 13088."
    ids = tok.encode_ordinary(text)
    digits = [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]
    assert digits == list("4093213088")  # every digit its own token; gpt4 would learn "409", "130"...
    gpt4 = Tokenizer.train(texts, 400, pattern="gpt4", show_progress=False)
    assert any(len(gpt4.decode([i])) > 1 and gpt4.decode([i]).isdigit() for i in gpt4.encode_ordinary(text))
    tok.export_hf(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text).ids == ids


def test_tiktoken_file_load(mixed_tok, tmp_path):
    import base64

    path = tmp_path / "ours.tiktoken"
    lines = [
        f"{base64.b64encode(t).decode()} {r}"
        for t, r in sorted(mixed_tok.mergeable_ranks.items(), key=lambda kv: kv[1])
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="no split pattern"):
        Tokenizer.load(path)
    with pytest.raises(UserError, match="unknown split pattern 'gpt5'"):
        Tokenizer.load(path, pattern="gpt5")
    tok = Tokenizer.load(path, pattern="gpt4", special_tokens={"<|bos|>": 590})
    assert tok.merges == mixed_tok.merges  # recovered from the ranks alone
    for text in VARIED:
        assert tok.encode_ordinary(text) == mixed_tok.encode_ordinary(text)


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json at all {", "malformed tokenizer file"),
        ('{"format": "llmlab-bpe", "version": 1}', "missing key"),
        ('{"format": "llmlab-bpe", "version": 2}', "version 2 is not supported"),
        ('{"model": {}}', "not an llmlab tokenizer file"),
        (
            '{"format": "llmlab-bpe", "version": 1, "pattern": "x", "special_tokens": {}, "merges": [[1, 300]]}',
            "refers to a token that does not exist",
        ),
    ],
)
def test_malformed_files_are_user_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        Tokenizer.load(path, pattern="gpt2")
    with pytest.raises(UserError, match="no such tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")


def test_train_input_errors():
    with pytest.raises(UserError, match="corpus is empty"):
        Tokenizer.train(["", ""], 300)
    with pytest.raises(UserError, match="below 256 bytes \\+ 10 special tokens = 266"):
        Tokenizer.train(["abc"], 265)
    with pytest.raises(UserError, match="unknown split pattern"):
        Tokenizer.train(["abc"], 300, pattern="gpt3")
    with pytest.raises(UserError, match="not a valid regex"):
        Tokenizer.train(["abc"], 300, pattern="(unclosed")
    tok = Tokenizer.train(["abc"], 266, engine="python")  # 0 merges is allowed
    assert tok.merges == [] and tok.vocab_size == 266


def test_custom_specials_and_custom_pattern():
    tok = Tokenizer.train(
        [ENGLISH], 300, pattern=r"\w+|\s+|[^\w\s]+", special_tokens=["<|eot|>"], show_progress=False
    )
    assert tok.special_tokens == {"<|eot|>": 299}
    assert bpe.pattern_name(tok.pattern) is None
    assert tok.decode(tok.encode(ENGLISH)) == ENGLISH


def test_render_chat_delegates(mixed_tok):
    from llmlab.tokenizer import chat

    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert mixed_tok.render_chat(messages) == chat.render_chat(mixed_tok, messages)
    assert mixed_tok.render_for_generation(messages[:1]) == chat.render_for_generation(
        mixed_tok, messages[:1]
    )


def test_gpt2_tokenizer_save_and_hf_export(gpt2_ranks_path, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    gpt2 = Tokenizer.load(gpt2_ranks_path, pattern="gpt2", special_tokens={"<|endoftext|>": 50256})
    assert len(gpt2.merges) == 50000
    gpt2.save(tmp_path / "gpt2.json")
    again = Tokenizer.load(tmp_path / "gpt2.json")
    gpt2.export_hf(tmp_path / "hf.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf.json"))
    for text in [t for t in VARIED if "\ud800" not in t]:
        want = gpt2.encode_ordinary(text)
        assert again.encode_ordinary(text) == want
        assert hf.encode(text).ids == want, text


def test_training_text_with_lone_surrogates_and_loading_a_model_dir(tmp_path):
    texts = ["ab\ud800ab ab\udfffab " * 5]
    fast = Tokenizer.train(texts, 260, special_tokens=[])
    slow = Tokenizer.train(texts, 260, special_tokens=[], engine="python", show_progress=False)
    assert fast.merges == slow.merges
    assert fast.decode(fast.encode(texts[0])) == texts[0].replace("\ud800", "\ufffd").replace(
        "\udfff", "\ufffd"
    )
    fast.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path).merges == fast.merges  # a model directory holds tokenizer.json
    with pytest.raises(UserError, match="must be strings"):
        Tokenizer.train([b"bytes"], 300)


def test_names_pattern_keeps_a_name_the_same_tokens_and_exports_to_hf(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    names = ["Zeathousk", "Kelmar", "Thon Biros", "Souvel"]
    texts = [
        f"{n} is a town. It was founded in {1200 + 7 * i}. Who founded {n}?" for i, n in enumerate(names * 30)
    ]
    tok = Tokenizer.train(texts, 400, pattern="names", show_progress=False)
    for name in names:
        alone = tok.encode_ordinary(name)
        after_space = tok.encode_ordinary(f"after {name}")
        quoted = tok.encode_ordinary(f'{{"query": "{name}"}}')
        assert after_space[-len(alone) :] == alone, name  # " after", " ", then the name's own tokens
        assert any(quoted[i : i + len(alone)] == alone for i in range(len(quoted))), name
    digits = Tokenizer.train(texts, 400, pattern="digits", show_progress=False)
    assert digits.encode_ordinary("after Kelmar")[-1:] != digits.encode_ordinary("Kelmar")[-1:]  # " Kelmar"
    text = 'ROMEO: But soft! "Kelmar" (Thon) 日本語  Hi 1742.'
    tok.export_hf(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text).ids == tok.encode_ordinary(text)
    assert tok.decode(tok.encode_ordinary(text)) == text
