"""The chunker: token budgets, overlap, boundaries (paragraph, then sentence, then token), offsets."""

from __future__ import annotations

import itertools

import pytest

from llmlab.errors import UserError
from llmlab.systems.rag.chunking import chunk_document
from llmlab.systems.rag.embed import WordSpans

WORDS = WordSpans().spans


def ntok(text: str) -> int:
    return len(WORDS(text))


def test_short_paragraphs_pack_whole_and_offsets_point_into_the_document():
    text = "One two three.\n\nFour five six.\n\nSeven eight nine."  # 4 tokens per paragraph
    chunks = chunk_document("d", "T", text, WORDS, size=8, overlap=0)
    assert [c.text for c in chunks] == ["One two three.\n\nFour five six.", "Seven eight nine."]
    for c in chunks:
        assert text[c.start : c.end] == c.text and c.doc_id == "d" and c.title == "T"
    assert [c.chunk_id for c in chunks] == ["d#0", "d#1"]


def test_a_long_paragraph_is_cut_at_sentences_with_overlap():
    sentences = [f"Sentence {i} has words." for i in range(10)]  # 5 tokens each
    text = " ".join(sentences)
    chunks = chunk_document("d", "", text, WORDS, size=12, overlap=5)
    assert all(ntok(c.text) <= 12 for c in chunks)
    assert all(c.text.startswith("Sentence") and c.text.endswith(".") for c in chunks)
    for a, b in itertools.pairwise(chunks):  # each chunk starts with the last sentence of the one before
        assert b.start < a.end and a.text.endswith(text[b.start : a.end])
    assert chunks[-1].end == len(text) and chunks[0].start == 0


def test_a_sentence_longer_than_the_chunk_is_cut_between_tokens():
    text = " ".join(f"w{i}" for i in range(50))  # one sentence of 50 tokens
    chunks = chunk_document("d", "", text, WORDS, size=20, overlap=5)
    assert all(ntok(c.text) <= 20 for c in chunks)
    covered = set()
    for c in chunks:
        covered |= set(c.text.split())
    assert covered == set(text.split())
    assert ntok(text[chunks[1].start : chunks[0].end]) == 5  # exactly `overlap` tokens shared


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_one_line_errors(size, overlap):
    with pytest.raises(UserError, match=r"--chunk-tokens|--overlap"):
        chunk_document("d", "", "text", WORDS, size, overlap)
