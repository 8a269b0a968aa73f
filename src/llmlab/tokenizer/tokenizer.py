"""The `Tokenizer`: trained byte-level BPE, encoded and decoded by tiktoken.

A tokenizer is three things: a split regex, the BPE merges (equivalently, the mergeable ranks
{token bytes: id}), and special tokens whose ids come after the merges:

    ids 0..255            the raw bytes
    ids 256..256+M-1      merge i -> id 256 + i (its bytes = bytes(left) + bytes(right))
    ids 256+M..           special tokens (<|bos|>, <|user|>, <|end|>, ...), never produced from text
                          unless allowed explicitly

    vocab_size = 256 + M + n_specials

Encoding is done by a `tiktoken.Encoding` built from our ranks (tiktoken's Rust core is the fastest
BPE encoder there is); `llmlab.tokenizer.bpe.encode_ordinary_reference` is the slow pure-Python
version the tests compare it with.

File format (`tok.save(path)`), one self-describing JSON file:

    {"format": "llmlab-bpe", "version": 1, "pattern_name": "gpt4" | null, "pattern": "<regex>",
     "special_tokens": {"<|bos|>": 8192, ...}, "merges": [[left_id, right_id], ...]}

plus "byte_ids" (the id of byte 0..255) when the bytes are not ids 0..255 in order (GPT-2's ranks).
`Tokenizer.load` also reads tiktoken `*.tiktoken` ranks files (`base64(token) rank` per line).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from llmlab.errors import UserError
from llmlab.io import atomic_write_text
from llmlab.tokenizer import bpe
from llmlab.tokenizer.stream import StreamDecoder

FORMAT = "llmlab-bpe"
VERSION = 1

# One tokenizer serves every stage: document boundary, chat roles, end of turn, tool calls.
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (
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
)

_NO_SPECIALS: frozenset[str] = frozenset()


class Tokenizer:
    """Byte-level BPE with special tokens; tiktoken semantics for `encode`/`decode`.

    Build one with `Tokenizer.train(...)` or `Tokenizer.load(path)`; the constructor takes the
    mergeable ranks directly."""

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        merges: list[tuple[int, int]] | None = None,
    ):
        import tiktoken

        self.pattern = pattern
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self._ranks = ranks
        self._merges = merges
        ids = set(ranks.values())
        clash = [s for s, i in self.special_tokens.items() if i in ids]
        if clash:
            raise UserError(
                f"special token {clash[0]!r} has id {self.special_tokens[clash[0]]}, "
                "which a regular token already has; give it an id after the merges"
            )
        self._enc = tiktoken.Encoding(
            f"llmlab-{len(ranks)}", pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )

    # ---------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] | None = None,
        *,
        engine: str = "auto",
        processes: int | None = None,
        show_progress: bool | None = None,
    ) -> Tokenizer:
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `texts` (documents).

        pattern: "gpt4" (default), "gpt2", "digits" (gpt4, one token per digit), "names" (digits,
        and a capitalised word never takes its space), or a custom regex. special_tokens: None means
        `DEFAULT_SPECIAL_TOKENS`; ids are assigned in order after the merges.
        engine: "auto" uses `rustbpe` (Rust, multi-threaded) when it is installed and accepts the
        pattern, else the pure-Python trainer; "python" forces the latter. Both give identical merges.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise UserError("training texts must be strings (one per document)")
        texts = [bpe.fix_surrogates(t) for t in texts]  # lone surrogates -> U+FFFD, as encode does
        if not any(texts):
            raise UserError("the training corpus is empty; give some text (a .txt, .jsonl or a folder)")
        pattern_str = bpe.resolve_pattern(pattern)
        specials = list(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
            raise UserError(f"special tokens must be distinct non-empty strings, got {specials}")
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise UserError(
                f"vocab size {vocab_size} is below 256 bytes + {len(specials)} special tokens "
                f"= {256 + len(specials)}; choose a larger --vocab-size"
            )
        if engine not in ("auto", "python"):
            raise UserError(f"unknown training engine {engine!r}; use 'auto' or 'python'")

        merges = bpe.train_merges_rustbpe(texts, n_merges, pattern_str) if engine == "auto" else None
        if merges is None:
            counts = bpe.count_chunks(texts, pattern_str, processes=processes)
            merges = bpe.train_merges(counts, n_merges, show_progress=show_progress)
        if len(merges) < n_merges:
            warnings.warn(
                f"the corpus has only {len(merges)} possible merges; the vocabulary has "
                f"{256 + len(merges) + len(specials)} tokens instead of {vocab_size}",
                stacklevel=2,
            )
        special_ids = {s: 256 + len(merges) + i for i, s in enumerate(specials)}
        return cls(bpe.ranks_from_merges(merges), pattern_str, special_ids, merges=merges)

    # ---------------------------------------------------------------- encoding

    def encode(
        self,
        text: str,
        allowed_special: Iterable[str] | str = (),
        disallowed_special: Iterable[str] | str = "all",
    ) -> list[int]:
        """Text -> ids. A special token's text is an error unless allowed (`allowed_special="all"` or
        a set of them); allowed ones become their single id. Exactly tiktoken's `encode`."""
        if allowed_special != "all":
            allowed_special = frozenset(allowed_special) if allowed_special else _NO_SPECIALS
        if disallowed_special != "all" and not isinstance(disallowed_special, frozenset):
            disallowed_special = frozenset(disallowed_special)
        try:
            return self._enc.encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special
            )
        except ValueError as e:  # tiktoken's "Encountered text corresponding to disallowed special token"
            raise UserError(
                str(e).split("\n")[0] + " Pass allowed_special='all' (CLI: --allow-special) to "
                "encode it as its id, or use encode_ordinary to encode it as plain text."
            ) from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, special-token text encoded as ordinary text."""
        return self._enc.encode_ordinary(text)

    def encode_batch(
        self, texts: Sequence[str], allowed_special: Iterable[str] | str = (), num_threads: int = 8
    ) -> list[list[int]]:
        """`encode` of each text, in `num_threads` threads (tiktoken releases the GIL)."""
        if allowed_special != "all":
            allowed_special = frozenset(allowed_special) if allowed_special else _NO_SPECIALS
        try:
            return self._enc.encode_batch(
                list(texts), allowed_special=allowed_special, num_threads=num_threads
            )
        except ValueError as e:
            raise UserError(
                str(e).split("\n")[0] + " Pass allowed_special='all' to encode it as its id."
            ) from None

    # ---------------------------------------------------------------- decoding

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Ids -> the raw bytes they stand for (special tokens as their text)."""
        if not isinstance(ids, list):
            ids = [int(i) for i in ids]
        try:
            return self._enc.decode_bytes(ids)
        except (KeyError, OverflowError, TypeError, ValueError):
            bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
            raise UserError(f"token id {bad} is not in this tokenizer (0..{self.vocab_size - 1})") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD (errors="replace")."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token."""
        return self.decode_bytes([token_id])

    def stream_decoder(self) -> StreamDecoder:
        """An incremental decoder: `.push(id) -> str` returns only complete characters."""
        return StreamDecoder(self)

    # ---------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (max id + 1)."""
        return self._enc.max_token_value + 1

    @property
    def merges(self) -> list[tuple[int, int]]:
        """(left_id, right_id) of every merge in training order; merge i has id 256 + i."""
        if self._merges is None:
            self._merges = bpe.recover_merges(self._ranks)
        return self._merges

    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        """{token bytes: id} of the regular (non-special) tokens."""
        return self._ranks

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the saved file's content: a stable cache key for data encoded with this tokenizer."""
        return hashlib.sha256(self._to_json().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        name = bpe.pattern_name(self.pattern) or "custom"
        return f"Tokenizer(vocab_size={self.vocab_size}, pattern={name}, specials={len(self.special_tokens)})"

    # ---------------------------------------------------------------- chat (see chat.py)

    def render_chat(
        self, messages: list[dict], tools: list[dict] | None = None
    ) -> tuple[list[int], list[int]]:
        """A conversation -> (ids, loss_mask); see `llmlab.tokenizer.chat.render_chat`."""
        from llmlab.tokenizer.chat import render_chat

        return render_chat(self, messages, tools)

    def render_for_generation(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """A conversation ending with the assistant header -> ids; see `llmlab.tokenizer.chat`."""
        from llmlab.tokenizer.chat import render_for_generation

        return render_for_generation(self, messages, tools)

    # ---------------------------------------------------------------- files

    def _byte_ids(self) -> list[int]:
        return [self._ranks[bytes([b])] for b in range(256)]

    def _to_json(self) -> str:
        """The file content: header keys first, then one merge per line (diffable, compact)."""
        head: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "pattern_name": bpe.pattern_name(self.pattern),
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
        }
        byte_ids = self._byte_ids()
        if byte_ids != list(range(256)):
            head["byte_ids"] = byte_ids
        merges = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        return json.dumps(head, indent=2, ensure_ascii=False)[:-2] + f',\n  "merges": [\n{merges}\n  ]\n}}\n'

    def save(self, path: str | os.PathLike) -> None:
        """Write our one-file JSON format (atomically)."""
        atomic_write_text(path, self._to_json())

    @classmethod
    def load(
        cls, path: str | os.PathLike, pattern: str | None = None, special_tokens: dict[str, int] | None = None
    ) -> Tokenizer:
        """Read our JSON file (or a folder's tokenizer.json), or a tiktoken ranks file (`*.tiktoken`;
        then `pattern` is required, e.g. `Tokenizer.load("gpt2.tiktoken", pattern="gpt2",
        special_tokens={"<|endoftext|>": 50256})`).

        `pattern` / `special_tokens`, when given, replace the file's."""
        path = Path(path)
        if path.is_dir():  # a model directory
            path = path / "tokenizer.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"{path}: no such tokenizer file; train one with `llmlab tokenizer train`"
            ) from None
        except OSError as e:
            raise UserError(f"{path}: cannot read tokenizer file ({e.strerror})") from None
        if data.lstrip()[:1] != b"{":
            return cls._load_tiktoken(path, data, pattern, special_tokens)
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: malformed tokenizer file ({e})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            hint = (
                " (a Hugging Face tokenizer.json? load the model directory with llmlab.load)"
                if isinstance(obj, dict) and "model" in obj
                else ""
            )
            raise UserError(f'{path}: not an llmlab tokenizer file (no "format": "{FORMAT}"){hint}')
        if obj.get("version") != VERSION:
            raise UserError(
                f"{path}: tokenizer file version {obj.get('version')!r} is not supported "
                f"(this llmlab reads version {VERSION})"
            )
        try:
            merges = [(int(a), int(b)) for a, b in obj["merges"]]
            for i, (a, b) in enumerate(merges):
                if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                    raise ValueError(f"merge {i} [{a}, {b}] refers to a token that does not exist yet")
            byte_ids = obj.get("byte_ids")
            if byte_ids is not None and sorted(byte_ids) != list(range(256)):
                raise ValueError("byte_ids must be a permutation of 0..255")
            file_pattern = str(obj["pattern"])
            specials = {str(k): int(v) for k, v in obj["special_tokens"].items()}
            ranks = bpe.ranks_from_merges(merges, byte_ids)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise UserError(f"{path}: malformed tokenizer file ({what})") from None
        pat = bpe.resolve_pattern(pattern) if pattern else file_pattern
        return cls(ranks, pat, specials if special_tokens is None else special_tokens, merges=merges)

    @classmethod
    def _load_tiktoken(
        cls, path: Path, data: bytes, pattern: str | None, special_tokens: dict[str, int] | None
    ) -> Tokenizer:
        if not pattern:
            raise UserError(
                f"{path}: a tiktoken ranks file has no split pattern; pass one "
                f"(--pattern gpt2 for GPT-2's ranks)"
            )
        pat = bpe.resolve_pattern(pattern)
        ranks: dict[bytes, int] = {}
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise UserError(
                    f"{path}:{lineno}: malformed tokenizer file (expected `base64 rank` "
                    "per line, or llmlab's JSON format)"
                ) from None
        if not ranks:
            raise UserError(f"{path}: malformed tokenizer file (no tokens)")
        return cls(ranks, pat, special_tokens or {})

    def export_hf(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face `tokenizers` tokenizer.json that encodes exactly like this tokenizer.

        Pipeline: split by our regex (isolated matches) -> byte-level map (each byte to a printable
        character, GPT-2's table) -> BPE with our merges in order -> specials as added tokens."""
        byte_chr = bytes_to_unicode()

        def name(token: bytes) -> str:
            return "".join(byte_chr[b] for b in token)

        id_to_bytes = {i: t for t, i in self._ranks.items()}
        vocab = {name(t): i for t, i in self._ranks.items()}
        merges = [f"{name(id_to_bytes[a])} {name(id_to_bytes[b])}" for a, b in self.merges]
        added = [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])
        ]
        obj = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": self.pattern},
                        "behavior": "Isolated",
                        "invert": False,
                    },
                    {
                        "type": "ByteLevel",
                        "add_prefix_space": False,
                        "trim_offsets": False,
                        "use_regex": False,
                    },
                ],
            },
            "post_processor": None,
            "decoder": {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": False,
                "use_regex": False,
            },
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": vocab,
                "merges": merges,
            },
        }
        atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, used by byte-level BPE vocabularies (HF
    `ByteLevel`): printable Latin-1 bytes stand for themselves, the other 68 get chr(256), chr(257), ...
    in byte order."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
