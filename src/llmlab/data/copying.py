"""Copying tasks on invented words: what a tool call and a grounded answer both need.

A tool call copies the operands out of the question; a grounded answer copies a name out of a source.
A model learns that from tasks whose answer is in the prompt and nowhere else (an induction head:
find the earlier occurrence, copy what followed). The words are invented (`brathisk`), so no corpus
holds them and no answer can be remembered:

    spell    "Spell the word brathisk."              → "b r a t h i s k"
    reverse  "Reverse the letters b r a t h."        → "h t a r b"
    repeat   "Repeat the word brathisk 3 times."     → "brathisk brathisk brathisk"

`test_examples()` is the held-out set (spell, reverse, repeat on `N_TEST` words that no training
generator may produce); `fresh_conversation(rng, tasks)` is one training conversation of that many
turns on new words, the kinds drawn in the proportions `TRAIN_WEIGHTS`. Each kind is learnt in a
phase change that needs thousands of examples, spelling most (docs/speedrun.md, "Copying needs
thousands of copy tasks" and "Twenty copy tasks a conversation"): reversing forms from ~9,000,
spelling needs ~25,000, since a held-out word's tokens (` b`, `un`, `uv`, `im`) are ~440 kinds
of piece whose letters are learnt piece by piece. Key-value lookup
(`vel = dorsk, mip = tovar. So mip is tovar.`) is in the pretraining corpus below only.
"""

from __future__ import annotations

import random

from llmlab.data.synthetic import Example

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
N_TEST = 60
KINDS = ("spell", "reverse", "repeat")
TRAIN_WEIGHTS = (2, 1, 2)  # spell, reverse, repeat: reversing forms first (it needs the fewest)


def invented_word(rng: random.Random) -> str:
    """A pronounceable invented word of 2-3 syllables (consonant-vowel pairs, sometimes a coda)."""
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))
    return word + (rng.choice(_CONSONANTS) if rng.random() < 0.5 else "")


def _heldout_words() -> list[str]:
    rng = random.Random("copying-heldout")
    words: dict[str, None] = {}
    while len(words) < N_TEST:
        words.setdefault(invented_word(rng), None)
    return list(words)


HELDOUT = frozenset(_heldout_words())


def _spaced(word: str) -> str:
    return " ".join(word)


def _task(kind: str, w: str, rng: random.Random) -> Example:
    if kind == "spell":
        return Example(f"Spell the word {w}.", _spaced(w))
    if kind == "reverse":
        return Example(f"Reverse the letters {_spaced(w)}.", _spaced(w[::-1]))
    n = 2 + len(w) % 3  # a fixed count per word, so the test set is one list
    return Example(f"Repeat the word {w} {n} times.", " ".join([w] * n))


def test_examples() -> list[Example]:
    """The held-out copying questions: each kind on every held-out word."""
    rng = random.Random("copying-test")
    return [_task(kind, w, rng) for kind in KINDS for w in _heldout_words()]


def fresh_word(rng: random.Random) -> str:
    """A new invented word that is neither a held-out word nor a held-out entity's name."""
    while True:
        w = invented_word(rng)
        if w not in HELDOUT and w not in _heldout_names():
            return w


_NAMES: set[str] = set()


def _heldout_names() -> set[str]:
    if not _NAMES:
        from llmlab.data.grounded import heldout_names  # it imports this module

        _NAMES.update(n.lower() for name in heldout_names() for n in name.split())
    return _NAMES


def fresh_conversation(rng: random.Random, tasks: int = 1) -> list[dict]:
    """One training conversation of `tasks` turns, each a kind drawn by `TRAIN_WEIGHTS` on a new word."""
    messages: list[dict] = []
    for _ in range(tasks):
        ex = _fresh_task(rng)
        messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
    return messages


def _fresh_task(rng: random.Random) -> Example:
    kind = rng.choices(KINDS, TRAIN_WEIGHTS)[0]
    if kind == "repeat":  # any count in training, so the count is read, not remembered
        w, n = fresh_word(rng), rng.randint(2, 4)
        return Example(f"Repeat the word {w} {n} times.", " ".join([w] * n))
    return _task(kind, fresh_word(rng), rng)


# ---- a plain-text corpus for pretraining: every second half is a copy -------------------------------


def _corpus_line(rng: random.Random, pool: list) -> str:
    kind = rng.choices(range(6), (3, 1, 1, 1, 1, 3))[0]  # mostly repeats: the densest copying signal
    if kind == 5:  # random codes: nothing but the earlier copy predicts the repeat (always a digit in
        codes = " ".join(_code(rng) for _ in range(rng.randint(3, 8)))  # each, so no code is a word)
        return " ".join([f"{codes}."] * rng.randint(2, 3))
    if kind == 0:  # a list, then the same list again: every token of a repeat is an induction target
        words = " ".join(fresh_word(rng) for _ in range(rng.randint(4, 12)))
        return " ".join([f"{words}."] * rng.randint(2, 3))
    if kind == 1:
        w = fresh_word(rng)
        return f"{w} is spelled {_spaced(w)}; backwards, {_spaced(w[::-1])}."
    if kind == 2:
        keys = list(dict.fromkeys(fresh_word(rng)[:3] for _ in range(rng.randint(2, 5))))
        pairs = {k: fresh_word(rng) for k in keys}
        key = rng.choice(keys)
        return ", ".join(f"{k} = {v}" for k, v in pairs.items()) + f". So {key} is {pairs[key]}."
    if kind == 3:
        a, b = rng.randint(12, 999), rng.randint(12, 99)
        return f"{a} times {b}: calculator {a} * {b} gives {a * b}, so {a} times {b} is {a * b}."
    docs = rng.sample(pool, rng.randint(1, 3))
    e = rng.choice(docs)
    f = rng.choice(e.facts)
    return " ".join(d.text for d in docs) + f" {f.question} {f.answer}."


def _code(rng: random.Random) -> str:
    chars = [rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(3, 6))]
    chars[rng.randrange(len(chars))] = rng.choice("0123456789")
    return "".join(chars)


def corpus_documents(n_docs: int = 1200, lines: int = 40, seed: int = 0) -> list[str]:
    """`n_docs` plain-text documents of copying exercises on new content (invented words, new
    operands, new invented entities) for pretraining beside prose: the built-in corpus "copying".
    Half of each line's tokens can only be predicted by finding an earlier occurrence and copying
    what followed it, the pattern an induction head implements."""
    from llmlab.data.grounded import fresh_entities
    from llmlab.data.tool_use import heldout_pairs

    rng = random.Random(f"copying-corpus-{seed}")
    banned = heldout_pairs()
    pool = fresh_entities(rng, 300, set())
    docs = []
    for _ in range(n_docs):
        out = []
        while len(out) < lines:
            line = _corpus_line(rng, pool)
            if not any(f"{a} * {b}" in line for a, b in banned):
                out.append(line)
        docs.append("\n".join(out))
    return docs
