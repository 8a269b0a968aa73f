"""Chunking: a document → pieces of at most `size` tokens, overlapping by up to `overlap` tokens.

Cuts fall at paragraph boundaries (blank lines) where they can, then at sentence ends, then between
tokens: a paragraph longer than `size` is split into sentences, a sentence longer than `size` into
windows of `overlap` tokens (of `size` when overlap is 0). Pieces are then packed greedily, in order,
into chunks of at most `size` tokens (counted as the sum of the pieces' token counts); each new chunk
starts with the last pieces of the previous one that total at most `overlap` tokens. A chunk keeps
its document's id and title and its character offsets: `chunk.text == doc.text[start:end]`.

Tokens come from `spans(text) -> [(start, end)]`, the character spans of a tokenizer's tokens (the
dense model's, or words when there is none).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from llmlab.errors import UserError

Spans = Callable[[str], list[tuple[int, int]]]
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    text: str
    start: int
    end: int

    def to_dict(self) -> dict:
        return asdict(self)


def check_sizes(size: int, overlap: int) -> None:
    if size < 1:
        raise UserError(f"--chunk-tokens must be >= 1, got {size}")
    if not 0 <= overlap < size:
        raise UserError(f"--overlap must be >= 0 and less than --chunk-tokens ({size}), got {overlap}")


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Spans of text[start:end] between matches of `pattern`, white space trimmed, empty ones dropped."""
    out, pos = [], start
    for m in [*pattern.finditer(text, start, end), None]:
        cut = m.start() if m else end
        seg = text[pos:cut]
        lead = len(seg) - len(seg.lstrip())
        s, e = pos + lead, pos + len(seg.rstrip())
        if e > s:
            out.append((s, e))
        pos = m.end() if m else end
    return out


def _pieces(text: str, spans: Spans, size: int, window: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) pieces of at most `size` tokens, at the coarsest boundary that allows it."""
    out = []
    for ps, pe in _split(text, 0, len(text), _PARAGRAPH):
        n = len(spans(text[ps:pe]))
        if n <= size:
            out.append((ps, pe, n))
            continue
        for ss, se in _split(text, ps, pe, _SENTENCE_END):
            toks = spans(text[ss:se])
            if len(toks) <= size:
                out.append((ss, se, len(toks)))
                continue
            for i in range(0, len(toks), window):
                group = toks[i : i + window]
                seg = text[ss + group[0][0] : ss + group[-1][1]]  # a BPE token may carry its space
                start = ss + group[0][0] + len(seg) - len(seg.lstrip())
                out.append((start, start + len(seg.strip()), len(group)))
    return out


def chunk_spans(text: str, spans: Spans, size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of the chunks of `text` (see the module docstring)."""
    check_sizes(size, overlap)
    chunks: list[tuple[int, int]] = []
    cur: list[tuple[int, int, int]] = []
    for piece in _pieces(text, spans, size, overlap or size):
        if cur and sum(p[2] for p in cur) + piece[2] > size:
            chunks.append((cur[0][0], cur[-1][1]))
            tail: list[tuple[int, int, int]] = []
            for p in reversed(cur):  # carry up to `overlap` tokens of whole pieces
                if sum(q[2] for q in tail) + p[2] > overlap:
                    break
                tail.insert(0, p)
            while tail and sum(q[2] for q in tail) + piece[2] > size:
                tail.pop(0)
            cur = tail
        cur.append(piece)
    if cur:
        chunks.append((cur[0][0], cur[-1][1]))
    return chunks


def chunk_document(doc_id: str, title: str, text: str, spans: Spans, size: int, overlap: int) -> list[Chunk]:
    """The chunks of one document; chunk ids are `doc_id#i`."""
    return [
        Chunk(f"{doc_id}#{i}", doc_id, title, text[s:e], s, e)
        for i, (s, e) in enumerate(chunk_spans(text, spans, size, overlap))
    ]
