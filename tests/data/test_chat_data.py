"""SFT data: formats, file:line errors, truncation, padded and packed batches (packed == unpacked)."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab.data.chat import (
    Conversation,
    load_conversations,
    read_jsonl,
    record_to_messages,
    tokenize_conversations,
)
from llmlab.data.chat_batches import IGNORE_INDEX, ChatBatches, pack_batch, pack_rows, pad_batch
from llmlab.data.synthetic import conversations
from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.tokenizer import Tokenizer
from llmlab.train.losses import cross_entropy


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [m["content"] for c in conversations("mix")[:400] for m in c]
    return Tokenizer.train(texts, 400)


def write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_three_formats():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert record_to_messages({"messages": msgs}) == msgs
    assert record_to_messages({"prompt": "Hi", "completion": "Hello"}) == msgs
    assert record_to_messages({"prompt": "Hi", "completion": "Hello", "system": "S"})[0] == {
        "role": "system",
        "content": "S",
    }
    assert record_to_messages({"instruction": "Hi", "input": "", "output": "Hello"}) == msgs
    assert (
        record_to_messages({"instruction": "Translate.", "input": "cat", "output": "chat"})[0]["content"]
        == "Translate.\n\ncat"
    )


def test_read_jsonl_and_folder(tmp_path):
    write(
        tmp_path / "a.jsonl",
        [{"prompt": "Hi", "completion": "Hello"}, "", {"instruction": "x", "input": "y", "output": "z"}],
    )
    write(
        tmp_path / "b.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    convs = read_jsonl(tmp_path / "a.jsonl")
    assert [c.where for c in convs] == [f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'a.jsonl'}:3"]
    assert len(load_conversations(tmp_path)) == 3
    assert len(load_conversations("builtin:arithmetic")) == len(conversations("arithmetic"))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": "a", "completion": ', r"f\.jsonl:2: malformed JSON"),
        ('{"question": "a"}', r"f\.jsonl:2: unknown record format \(keys: question\)"),
        ("[1, 2]", r"f\.jsonl:2: expected a JSON object"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
            r"f\.jsonl:2: message 1: a user message cannot come after a user message",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}',
            r"f\.jsonl:2: message 1: empty assistant turn",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    path = write(tmp_path / "f.jsonl", [{"prompt": "ok", "completion": "fine"}, line])
    with pytest.raises(UserError, match=match):
        read_jsonl(path)


def test_tool_use_conversations_load(tmp_path, tok):
    conv = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"c": "Oslo"}}}],
            },
            {"role": "tool", "name": "w", "content": "3"},
            {"role": "assistant", "content": "3 degrees"},
        ]
    }
    (c,) = read_jsonl(write(tmp_path / "t.jsonl", [conv]))
    ((ids, mask),) = tokenize_conversations(tok, [c], 200)
    assert (
        tok.decode([i for i, m in zip(ids, mask) if m])
        == '<|tool_call|>{"name": "w", "arguments": {"c": "Oslo"}}<|/tool_call|><|end|> 3 degrees<|end|>'
    )


def test_bad_sources(tmp_path):
    with pytest.raises(UserError, match="unknown built-in SFT data 'builtin:nope'"):
        load_conversations("builtin:nope")
    with pytest.raises(UserError, match="no such SFT data file"):
        load_conversations(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="no conversations"):
        read_jsonl(write(tmp_path / "empty.jsonl", [""]))


def test_truncation_modes(tok, capsys):
    long = Conversation(
        [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok " * 50}], "x.jsonl:7"
    )
    short = Conversation(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "x.jsonl:8"
    )
    with pytest.raises(UserError, match=r"x\.jsonl:7: conversation has \d+ tokens, more than the 40"):
        tokenize_conversations(tok, [long, short], 40, truncate="error")
    out = tokenize_conversations(tok, [long, short], 40, truncate="drop")
    assert (
        len(out) == 1 and "1 of 2 conversations are longer than 40 tokens; dropped" in capsys.readouterr().err
    )
    # cut: the long one keeps 40 tokens, but only user text remains in them, so it is left out too
    out = tokenize_conversations(tok, [long, short], 40, truncate="warn")
    assert len(out) == 1 and "no assistant tokens remained" in capsys.readouterr().err
    out = tokenize_conversations(tok, [long, short], 80, truncate="warn")
    assert next(len(ids) for ids, _ in out) == 80 and any(out[0][1])
    with pytest.raises(UserError, match=r"sft\.truncate"):
        tokenize_conversations(tok, [short], 40, truncate="maybe")


def test_pad_batch_targets():
    seqs = [([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6], [0, 1])]
    b = pad_batch(seqs, pad_id=9)
    assert b["ids"].tolist() == [[1, 2, 3], [5, 9, 9]]
    assert b["targets"].tolist() == [[IGNORE_INDEX, 3, 4], [6, IGNORE_INDEX, IGNORE_INDEX]]


def test_pack_rows_fit():
    lengths = [5, 4, 6, 2, 9]  # positions used: 4, 3, 5, 1, 8
    rows = pack_rows(lengths, row_len=8)
    assert rows == [[0, 1], [2, 3], [4]]
    assert all(sum(lengths[i] - 1 for i in r) <= 8 for r in rows)


def test_packed_mask_is_block_diagonal_causal():
    b = pack_batch([[([1, 2, 3], [0, 1, 1]), ([4, 5, 6, 7], [0, 0, 1, 1])]], row_len=7)
    assert b["positions"][0].tolist() == [0, 1, 0, 1, 2, 0, 0]
    m = b["attn_mask"][0, 0].int()
    assert m.tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
    ]
    assert b["targets"][0].tolist() == [2, 3, IGNORE_INDEX, 6, 7, IGNORE_INDEX, IGNORE_INDEX]


def test_packed_and_unpacked_losses_are_equal(tok):
    """The same conversations give the same loss (and the same per-token logits) packed or padded."""
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=128
        )
    ).eval()
    seqs = [s for s in map(tok.render_chat, conversations("mix")) if len(s[0]) <= 64][:12]  # fit a row
    padded = pad_batch(seqs)
    rows = [[seqs[i] for i in r] for r in pack_rows([len(s[0]) for s in seqs], 128)]
    assert len(rows) < len(seqs)  # several conversations share a row
    packed = pack_batch(rows, 128)
    with torch.no_grad():
        lp = cross_entropy(model(padded["ids"]), padded["targets"])
        lk = cross_entropy(
            model(packed["ids"], positions=packed["positions"], attn_mask=packed["attn_mask"]),
            packed["targets"],
        )
        # per-token: the first conversation's logits alone vs inside the packed row
        alone = model(padded["ids"][:1, : len(seqs[0][0]) - 1])
        inside = model(packed["ids"], positions=packed["positions"], attn_mask=packed["attn_mask"])[
            :1, : len(seqs[0][0]) - 1
        ]
    assert int((packed["targets"] != IGNORE_INDEX).sum()) == int((padded["targets"] != IGNORE_INDEX).sum())
    torch.testing.assert_close(lk, lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inside, alone, atol=1e-4, rtol=1e-4)
    # a plain causal mask over the packed row (conversations seeing each other) gives a different loss
    with torch.no_grad():
        leaky = cross_entropy(model(packed["ids"]), packed["targets"])
    assert abs(float(leaky) - float(lp)) > 1e-4


@pytest.mark.parametrize("pack", [True, False])
def test_chat_batches_deterministic_and_cover_an_epoch(tok, pack):
    seqs = [tok.render_chat(c) for c in conversations("arithmetic")[:40]]
    a = ChatBatches(seqs, batch_size=4, row_len=64, pack=pack, seed=5)
    b = ChatBatches(seqs, batch_size=4, row_len=64, pack=pack, seed=5)
    for step in [0, 3, a.steps_per_epoch + 1, 2]:
        x, y = a.get(step), b.get(step)
        assert torch.equal(x["ids"], y["ids"]) and torch.equal(x["targets"], y["targets"])
    if not pack:  # one epoch = every conversation once (up to the last partial batch)
        seen = torch.cat([a.get(s)["targets"][:, :3].flatten() for s in range(a.steps_per_epoch)])
        assert a.steps_per_epoch == 10 and len(seen) == 40 * 3
    assert not torch.equal(a.get(0)["ids"], ChatBatches(seqs, 4, 64, pack, seed=6).get(0)["ids"])


def test_micro_batches_give_the_whole_batch_gradient_with_less_padding():
    # a step of 6 conversations of lengths 3..40, as one batch and as 3 micro-batches by length
    import random

    from llmlab.train.sft import sft_loss

    rng = random.Random(0)
    seqs = []
    for n in rng.sample(range(3, 41), 12):
        ids = [rng.randrange(1, 50) for _ in range(n)]
        seqs.append((ids, [int(rng.random() < 0.6) for _ in range(n)]))
    whole = ChatBatches(seqs, batch_size=6, row_len=64, pack=False, seed=3)
    split = ChatBatches(seqs, batch_size=6, row_len=64, pack=False, seed=3, micro_batches=3)
    parts = [split.get(1, m) for m in range(3)]
    assert [p["ids"].shape[0] for p in parts] == [2, 2, 2]
    assert sorted(map(tuple, torch.cat([p["ids"][:, :3] for p in parts]).tolist())) == sorted(
        map(tuple, whole.get(1)["ids"][:, :3].tolist())
    )  # the same rows
    assert sum(p["ids"].numel() for p in parts) < whole.get(1)["ids"].numel()
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, n_layer=1, d_model=16, n_head=2, d_ff=32, context=64))

    def grad(batches: list[dict]) -> torch.Tensor:
        model.zero_grad()
        sums = [sft_loss(model, b)[:2] for b in batches]
        (sum(s for s, _ in sums) / sum(n for _, n in sums)).backward()  # the loop's normalisation
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    torch.testing.assert_close(grad(parts), grad([whole.get(1)]), rtol=1e-5, atol=1e-6)
