"""Shared fixtures for the tokenizer tests: small corpora, a trained tokenizer, GPT-2's ranks."""

from __future__ import annotations

import random

import pytest

from llmlab.errors import UserError

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it? We'll see; they've "
    "gone, I'd say. THE END. Numbers: 1, 12, 123, 1234, 3.14159 and 2024-01-01.\n\n"
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
)
CODE = (
    "def f(x):\n    return x ** 2  # square\n\n\tif (a && b) { c->d[0] = 0x1F; }\n"
    "for i in range(10):\n        print(f'{i:>3}')   \n"
)
UNICODE = (
    "naïve café, Crème brûlée; e\u0301 n\u0303 a\u0308 (combining marks)\n"
    "日本語の文章です。中文句子。한국어 문장.\n"
    "emoji: 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ 🤖\n"
    "Ελληνικά, русский текст, עברית, العربية\n"
)
WHITESPACE = "a  b   c\t\td\n\n\ne \r\n f\u00a0g\u2003h   \n   \n\t \n end   "

VARIED = [
    ENGLISH,
    CODE,
    UNICODE,
    WHITESPACE,
    "",
    " ",
    "\n",
    "12345678901234567890",
    "a" * 50,
    "ab" * 40,
    "!!!???...,,,",
    "x\ud800y lone \udfff surrogates",
    "<|bos|> not special here",
    "'S 'LL 'Ve 're 'd",
    "don't DON'T",
    "\u200b\ufeffzero width",
    "1 22 333 4444 55555",
]


def random_corpus(seed: int, n_words: int = 300, alphabet: str = "abcab ") -> list[str]:
    """Documents of random words over a tiny alphabet: almost every pair count ties."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(n_words)]
    return [" ".join(words[i : i + 50]) for i in range(0, n_words, 50)]


@pytest.fixture(scope="session")
def mixed_tok():
    """A small tokenizer trained (pure Python) on all the kinds of text above."""
    from llmlab.tokenizer import Tokenizer

    return Tokenizer.train(
        [ENGLISH * 3, CODE * 2, UNICODE * 2, WHITESPACE], 600, engine="python", show_progress=False
    )


@pytest.fixture(scope="session")
def gpt2_ranks_path():
    """GPT-2's ranks (whisper's gpt2.tiktoken), fetched from PyPI once into the llmlab cache.
    Skips when the package registry cannot be reached and the file is not cached."""
    from llmlab.data.corpus import fetch

    try:
        return fetch("gpt2-ranks")
    except UserError as e:
        pytest.skip(f"GPT-2 ranks not cached and not downloadable: {e}")
