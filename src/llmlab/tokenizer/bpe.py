"""Byte-level BPE: the trainer (pure Python, plus the `rustbpe` fast path) and a reference encoder.

Training, in one paragraph. Text is first cut into chunks by a split regex (so a token never spans
a word and the space or punctuation around it in the wrong way), and each chunk becomes a sequence of
byte ids 0..255. Then, `n_merges` times: count every adjacent pair of ids over all chunks, weighting
each chunk by how often it occurs,

    count(a, b) = Σ_chunks  freq(chunk) · #{i : chunk[i] = a, chunk[i+1] = b},

pick the winner  argmax_(a,b) count(a, b)  -- ties broken by the smallest (a, b), the rule `rustbpe`
uses, so results are comparable -- give it the next id 256 + i, and replace every occurrence of
(a, b) in every chunk, left to right, without overlaps, by the new id.

The fast way to do exactly that (this module's `train_merges`):
  * count unique chunks once (`count_chunks`); a chunk seen 10 000 times is processed once;
  * keep `pair -> count` and `pair -> chunks that contain it`;
  * a max-heap of (count, pair) with lazy invalidation: counts of existing pairs only ever go down
    (a merge creates only pairs that contain the new id), so a heap entry is an upper bound; pop,
    and if the stored count is stale, push the current one back;
  * after a merge, update counts only in the chunks that contained the winning pair.

Encoding (`encode_ordinary_reference`) is the obviously-correct byte-pair algorithm tiktoken runs:
in each chunk, repeatedly merge the adjacent pair whose concatenated bytes have the lowest rank.
The package encodes with tiktoken itself; this slow version is the oracle the tests compare with.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import regex

from llmlab.errors import UserError
from llmlab.io import progress

# Split patterns. "gpt2" is GPT-2's (tiktoken's r50k_base, in its original readable form); "gpt4" is
# GPT-4's cl100k_base pattern as written in minbpe and rustbpe: case-insensitive contractions, letters
# with one optional leading non-letter, numbers in groups of at most 3 digits, punctuation runs,
# newlines, and whitespace that never swallows the space before a word. "digits" is "gpt4" with every
# digit its own piece (LLaMA's split_digits): a number is its digits, so copying or reading one is
# ten token ids to learn, not hundreds of uneven chunks ("305" -> "30", "5" but "409" -> "409").
# "names" is "digits" where a capitalised word never takes the space before it: "after Zeathousk" ->
# " after", " ", "Zeathousk". A name is then the same tokens after a space, at a line's start and
# after a quote, so copying it into a tool call or an answer is one copy, not a map from " Z" to "Z"
# (one more token per capitalised word after a space: 2.21 bytes a token on the demo's held-out
# text, 2.26 with "digits").
PATTERNS: dict[str, str] = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
    "digits": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
    "names": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+(?!\p{Lu}|\p{Lt})\p{L}+|\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
}

Pair = tuple[int, int]


def resolve_pattern(pattern: str) -> str:
    """A pattern name ("gpt4", "gpt2") or a custom regex -> the regex string.

    A string made only of letters, digits, '-' and '_' is taken as a name; anything else as a regex."""
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if regex.fullmatch(r"[A-Za-z0-9_\-]+", pattern or ""):
        raise UserError(f"unknown split pattern {pattern!r}; use one of {sorted(PATTERNS)} or a regex")
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise UserError(f"split pattern {pattern!r} is not a valid regex ({e})") from None
    return pattern


def pattern_name(pattern: str) -> str | None:
    """The name of a built-in pattern string, or None for a custom one."""
    return next((name for name, pat in PATTERNS.items() if pat == pattern), None)


# ---------------------------------------------------------------------------------------------
# Step 1: split the corpus into chunks and count the unique ones.


def _count_docs(args: tuple[str, list[str]]) -> Counter:
    pattern, docs = args
    compiled = regex.compile(pattern)
    counts: Counter = Counter()
    for doc in docs:
        counts.update(compiled.findall(doc))
    return counts


def count_chunks(
    texts: Sequence[str], pattern: str, processes: int | None = None, min_parallel_chars: int = 4_000_000
) -> Counter:
    """Counter {chunk: occurrences} of the regex chunks of all `texts`.

    Documents are independent, so big corpora (> `min_parallel_chars`, several documents) are split over
    `processes` worker processes (default: all cores); each returns its Counter and we add them.
    A document is never cut, because a cut could change how the regex splits it."""
    pattern_str = resolve_pattern(pattern)
    total = sum(len(t) for t in texts)
    if processes is None:
        processes = min(os.cpu_count() or 1, 8)
    processes = max(1, min(processes, len(texts)))
    if processes == 1 or total < min_parallel_chars or "fork" not in multiprocessing.get_all_start_methods():
        return _count_docs((pattern_str, list(texts)))
    # Deal documents into `processes` groups of about equal size (largest first), one task each.
    groups: list[list[str]] = [[] for _ in range(processes)]
    sizes = [0] * processes
    for doc in sorted(texts, key=len, reverse=True):
        i = sizes.index(min(sizes))
        groups[i].append(doc)
        sizes[i] += len(doc)
    # "fork": workers start instantly and need no `if __name__ == "__main__"` guard in the caller's
    # script (spawn would re-run it); they only run `regex`, so the parent's threads do not matter.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_count_docs, [(pattern_str, g) for g in groups])
    counts = parts[0]
    for part in parts[1:]:
        counts.update(part)
    return counts


# ---------------------------------------------------------------------------------------------
# Step 2: the merge loop.


def _apply_merge(
    words: list[list[int]],
    freqs: list[int],
    chunk_ids: Iterable[int],
    pair: Pair,
    new_id: int,
    pair_counts: dict[Pair, int],
) -> dict[Pair, set[int]]:
    """Merge `pair` -> `new_id` in place in the chunks `chunk_ids`, updating the pair counts.

    Each occurrence x a b y  ->  x N y  changes the counts by  (x,a) -f, (x,N) +f, (b,y) -f, (N,y) +f
    (f = the chunk's frequency; (a,b) itself is dropped by the caller). When two occurrences touch
    (a b a b), the second one's x is the N just written, and the deltas still add up right.
    Returns {new pair: chunks containing it}; every new pair contains N, so none existed before."""
    a, b = pair
    new_where: dict[Pair, set[int]] = defaultdict(set)
    for wi in chunk_ids:
        word = words[wi]
        f = freqs[wi]
        n = len(word)
        i = 0
        while i < n - 1:
            if word[i] == a and word[i + 1] == b:
                if i > 0:
                    x = word[i - 1]
                    pair_counts[x, a] -= f
                    pair_counts[x, new_id] += f
                    new_where[x, new_id].add(wi)
                if i + 2 < n:
                    y = word[i + 2]
                    pair_counts[b, y] -= f
                    pair_counts[new_id, y] += f
                    new_where[new_id, y].add(wi)
                word[i : i + 2] = (new_id,)
                n -= 1
            i += 1
    return new_where


def train_merges(
    chunk_counts: dict[str, int], n_merges: int, show_progress: bool | None = None
) -> list[Pair]:
    """Learn up to `n_merges` merges from {chunk: count}; merge i creates token id 256 + i.

    Stops early when no pair is left (every chunk is a single token)."""
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())

    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> chunks that may contain it
    for wi, word in enumerate(words):
        f = freqs[wi]
        for pair in itertools.pairwise(word):
            pair_counts[pair] += f
            where[pair].add(wi)
    # heapq is a min-heap: key (-count, pair) pops the highest count, then the smallest pair.
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    bar = progress(
        total=n_merges,
        desc="bpe merges",
        unit="merge",
        disable=None if show_progress is None else not show_progress,
    )
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count <= 0:
            continue
        if count != -neg_count:  # stale entry: the true count is lower; requeue it
            heapq.heappush(heap, (-count, pair))
            continue

        new_id = 256 + len(merges)
        merges.append(pair)
        new_where = _apply_merge(words, freqs, where.pop(pair), pair, new_id, pair_counts)
        del pair_counts[pair]  # every occurrence is gone now
        where.update(new_where)
        for p in new_where:  # only pairs with the new id are new: push each once, with its full count
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
        bar.update(1)
    bar.close()
    return merges


def train_merges_rustbpe(texts: Sequence[str], n_merges: int, pattern: str) -> list[Pair] | None:
    """The same training done by `rustbpe` (Rust, parallel), or None when it cannot do it.

    rustbpe (nanochat's trainer) uses the same tie rule and chunking; its `vocab_size` counts the
    256 bytes plus the merges and no special tokens. It returns token bytes by id, not the pairs, so
    each merge's pair is recovered as the split of its bytes by the lower-ranked tokens."""
    if n_merges <= 0:
        return None
    try:
        import rustbpe
    except ImportError:
        return None
    trainer = rustbpe.Tokenizer()
    try:
        trainer.train_from_iterator(iter(texts), vocab_size=256 + n_merges, pattern=pattern)
    except ValueError:  # a custom pattern its regex engine (fancy-regex) does not accept
        return None
    ranks = {bytes(b): r for b, r in trainer.get_mergeable_ranks()}
    return recover_merges(ranks)


# ---------------------------------------------------------------------------------------------
# Ranks <-> merges.


def ranks_from_merges(merges: Sequence[Pair], byte_ids: Sequence[int] | None = None) -> dict[bytes, int]:
    """{token bytes: id}: byte b has id `byte_ids[b]` (default b), merge i has id 256 + i."""
    byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
    vocab: dict[int, bytes] = {byte_ids[b]: bytes([b]) for b in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    ranks = {tok: i for i, tok in vocab.items()}
    if len(ranks) != len(vocab):
        raise ValueError("two merges produce the same bytes; this BPE cannot be run by tiktoken")
    return ranks


def recover_merges(ranks: dict[bytes, int]) -> list[Pair]:
    """The (left_id, right_id) pair of every multi-byte token, in rank order.

    Token t (rank r) is split by running BPE on its bytes with only the ranks below r; that leaves
    exactly the two tokens it was merged from (minbpe's trick for tiktoken's GPT-4 ranks). Requires
    the 256 single bytes at ranks 0..255 and merges at 256, 257, ... without gaps."""
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    if sorted(r for b, r in by_rank if len(b) == 1) != list(range(256)) or [r for _, r in by_rank] != list(
        range(len(by_rank))
    ):
        raise ValueError("ranks must put the 256 single bytes at 0..255 and merges at 256, 257, ...")
    merges = []
    for token, rank in by_rank[256:]:
        parts = bpe_encode_piece(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


# ---------------------------------------------------------------------------------------------
# The reference encoder (slow, obviously correct; tiktoken is the real engine).


def bpe_encode_piece(piece: bytes, ranks: dict[bytes, int], max_rank: int | None = None) -> list[int]:
    """Byte-pair-encode one chunk: while some adjacent pair (x, y) has rank(x + y) < max_rank,
    merge the leftmost pair of lowest rank. Returns the ids (ranks) of the parts."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (max_rank is None or r < max_rank) and (best_rank is None or r < best_rank):
                best_rank, best_i = r, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[p] for p in parts]


def fix_surrogates(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; like tiktoken, replace them with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def encode_ordinary_reference(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """Split `text` with the regex, then BPE each chunk. A chunk that is itself a token is that token
    (tiktoken's shortcut, kept so the ids are identical in every case)."""
    ids: list[int] = []
    for chunk in regex.findall(pattern, fix_surrogates(text)):
        piece = chunk.encode("utf-8")
        if piece in ranks:
            ids.append(ranks[piece])
        else:
            ids.extend(bpe_encode_piece(piece, ranks))
    return ids


def encode_reference(
    text: str,
    ranks: dict[bytes, int],
    pattern: str,
    special_tokens: dict[str, int],
    allowed_special: Iterable[str] = (),
) -> list[int]:
    """`encode_ordinary_reference`, but each allowed special token in the text becomes its one id."""
    allowed = sorted(set(allowed_special), key=len, reverse=True)
    if not allowed:
        return encode_ordinary_reference(text, ranks, pattern)
    ids: list[int] = []
    splitter = "(" + "|".join(regex.escape(s) for s in allowed) + ")"
    for i, part in enumerate(regex.split(splitter, text)):
        if i % 2:
            ids.append(special_tokens[part])
        elif part:
            ids.extend(encode_ordinary_reference(part, ranks, pattern))
    return ids
