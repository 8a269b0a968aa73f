"""Built-in synthetic instruction data: small tasks generated in code, with held-out test splits.

Each task is a deterministic list of `Example(prompt, answer, choices)`; `examples(task, split)`
returns its "train" or "test" half. The same examples serve three purposes:

* SFT data: `conversations("mix")` turns the train split into chat conversations
  (`[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]`);
* in-context learning: k worked examples drawn from the train split, then a test question;
* multiple-choice evaluation: `choices` holds the answer plus three plausible wrong ones.

What is held out, per task (a test question is never a training question; what else the SFT mix
trains is said too, since a test answer that also occurs as a training answer measures less):

    arithmetic      a + b and a - b with a, b ≤ 12; 20% of the (a, op, b) triples held out. The
                    answers (0-24) are all trained, and b + a of most held-out sums is trained
    plurals         English plural rules (+s, +es, y→ies, irregulars); held-out regular nouns,
                    whose plurals occur nowhere in training
    opposites       a table of antonyms; held-out question wording only: every fact is trained
    capitals        a table of countries; held-out question wording only: every fact is trained
    spelling        "Spell the word cat." → "c a t"; held-out words (never a training answer, but
                    most appear spelled out in the reverse task's training questions)
    reverse         "Reverse the letters c a t." → "t a c"; held-out words
    count_letters   "How many letters are in the word cat?" → "3"; held-out words, trained answers
    format          repeat / quote / join with commas / reverse or count a word list / first or last
                    word; held-out word lists (single-word and count answers also occur in training)
    largest         "Which number is largest: 41, 87, 63?" → "87"; held out by answer: a fifth of
                    the numbers 25-99 occur nowhere in any training split, and every test answer is
                    one of them
    grounded        a question with numbered sources about invented towns and people, answered
                    with a citation, "Kelmar [2]: Ilsa Dorne" (llmlab.data.grounded); held-out entities
    tool_use        "What is 417 × 36?" and two-step word problems, answered through a calculator
                    call and its result (data/tool_use.py); a fifth of the operand triples held out

Everything is generated from fixed string seeds, so the data is identical on every machine; the
tasks are varied enough that a tiny CPU model learns some of them measurably and saturates none.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from llmlab.errors import UserError


@dataclass(frozen=True)
class Example:
    """One question. `choices` (answer included) enables multiple-choice scoring; may be empty."""

    prompt: str
    answer: str
    choices: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        d = {"prompt": self.prompt, "answer": self.answer}
        if self.choices:
            d["choices"] = list(self.choices)
        return d


# ---- tables written in the code ---------------------------------------------------------------------

# fmt: off
NOUNS = [
    "cat", "dog", "book", "tree", "car", "house", "bird", "apple", "door", "hat", "cup", "pen",
    "bed", "boat", "ship", "star", "hand", "song", "road", "farm", "king", "queen", "girl", "boy",
    "friend", "ring", "bell", "coat", "shoe", "sock", "lamp", "desk", "chair", "table", "river",
    "hill", "rock", "stone", "cloud", "rain", "field", "flower", "garden", "window", "wall", "room",
    "horse", "cow", "pig", "goat", "duck", "frog", "bear", "lion", "tiger", "snake", "egg", "cake",
    "bag", "box", "fox", "bus", "dish", "brush", "glass", "dress", "watch", "church", "beach",
    "match", "class", "lunch", "kiss", "wish", "baby", "city", "lady", "party", "story", "cherry",
    "penny", "puppy", "pony", "berry", "family", "army", "country", "body", "copy", "key", "toy",
    "boy", "day", "way", "monkey", "donkey", "valley", "turkey", "chimney", "plan", "map", "cap",
    "pot", "pan", "bowl", "spoon", "fork", "plate", "jar", "nest", "seed", "leaf",
]

IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "mouse": "mice", "foot": "feet",
    "tooth": "teeth", "goose": "geese", "person": "people", "sheep": "sheep", "fish": "fish",
    "deer": "deer", "ox": "oxen", "leaf": "leaves", "knife": "knives", "wife": "wives",
    "wolf": "wolves", "life": "lives", "half": "halves", "loaf": "loaves", "thief": "thieves",
}

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "light": "dark",
    "old": "young", "good": "bad", "rich": "poor", "hard": "soft", "high": "low", "early": "late",
    "full": "empty", "open": "closed", "strong": "weak", "wet": "dry", "long": "short",
    "loud": "quiet", "clean": "dirty", "first": "last", "true": "false", "day": "night",
    "black": "white", "win": "lose", "left": "right", "in": "out", "love": "hate", "push": "pull",
    "thick": "thin", "near": "far", "heavy": "light", "sweet": "sour", "war": "peace",
    "buy": "sell", "begin": "end", "friend": "enemy",
}

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "England": "London", "Ireland": "Dublin", "Scotland": "Edinburgh",
    "Norway": "Oslo", "Sweden": "Stockholm", "Denmark": "Copenhagen", "Finland": "Helsinki",
    "Poland": "Warsaw", "Austria": "Vienna", "Greece": "Athens", "Egypt": "Cairo", "Japan": "Tokyo",
    "China": "Beijing", "India": "Delhi", "Russia": "Moscow", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Kenya": "Nairobi",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Hungary": "Budapest",
    "Belgium": "Brussels", "Netherlands": "Amsterdam", "Switzerland": "Bern",
    "Australia": "Canberra", "Argentina": "Buenos Aires", "Thailand": "Bangkok",
}

# Short words for the spelling / reversing / formatting tasks (lower case, 3-6 letters).
MORE_WORDS = [
    "sun", "moon", "sea", "sky", "fire", "wind", "snow", "ice", "gold", "iron", "milk", "bread",
    "salt", "wine", "mark", "note", "word", "line", "page", "time", "name", "home", "love", "hope",
    "rose", "lily", "mint", "plum", "pear", "lime", "corn", "rice", "bean", "nut", "oak", "pine",
    "fern", "moss",
]
# fmt: on
WORDS = sorted(set(NOUNS + list(OPPOSITES) + list(OPPOSITES.values()) + MORE_WORDS))


def plural(noun: str) -> str:
    """English plural: irregular table, else -es after s/x/z/ch/sh, consonant+y → -ies, else -s."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


# ---- helpers ----------------------------------------------------------------------------------------


def _split(items: list, test_fraction: float, seed: str) -> tuple[list, list]:
    """Deterministic shuffle with a fixed string seed, then cut: (train, test)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_test = max(1, round(len(items) * test_fraction))
    return items[n_test:], items[:n_test]


def _choices(answer: str, wrong: list[str], rng: random.Random, n: int = 4) -> tuple[str, ...]:
    """The answer plus n-1 distinct wrong options, in a random order."""
    pool = sorted({w for w in wrong if w != answer})
    opts = [answer, *rng.sample(pool, min(n - 1, len(pool)))]
    rng.shuffle(opts)
    return tuple(opts)


def _spaced(word: str) -> str:
    return " ".join(word)


# ---- the tasks: each returns (train, test) ----------------------------------------------------------

Split = tuple[list[Example], list[Example]]


def _arithmetic() -> Split:
    templates = [
        "What is {a} {op} {b}?",
        "Compute {a} {op} {b}.",
        "{a} {op} {b} = ?",
        "Work out {a} {op} {b}.",
    ]
    triples = [(a, "+", b) for a in range(13) for b in range(13)]
    triples += [(a, "-", b) for a in range(13) for b in range(a + 1)]
    train, test = _split(triples, 0.2, "arithmetic")
    rng = random.Random("arithmetic-render")

    def make(t: tuple[int, str, int]) -> Example:
        a, op, b = t
        ans = a + b if op == "+" else a - b
        wrong = [str(ans + d) for d in (-10, -2, -1, 1, 2, 10) if ans + d >= 0]
        return Example(
            rng.choice(templates).format(a=a, op=op, b=b), str(ans), _choices(str(ans), wrong, rng)
        )

    return [make(t) for t in train], [make(t) for t in test]


def _plurals() -> Split:
    templates = [
        "What is the plural of {w}?",
        "Give the plural form of the word {w}.",
        "One {w}, two what?",
        'Write the plural of "{w}".',
    ]
    nouns = sorted(set(NOUNS) | set(IRREGULAR_PLURALS))
    # Irregulars must be learned as facts, so they all stay in train; test the rules on new nouns.
    regular = [n for n in nouns if n not in IRREGULAR_PLURALS]
    train_r, test = _split(regular, 0.2, "plurals")
    train = sorted(IRREGULAR_PLURALS) + train_r
    rng = random.Random("plurals-render")

    def make(w: str, template: str) -> Example:
        ans = plural(w)
        wrong = [w + "s", w + "es", w, w[:-1] + "ies", w + "en", w + "ies"]
        return Example(template.format(w=w), ans, _choices(ans, wrong, rng))

    train_ex = [make(w, t) for w in train for t in rng.sample(templates, 2)]  # two wordings each
    return train_ex, [make(w, rng.choice(templates)) for w in test]


def _table_task(
    table: dict[str, str], train_templates: list[str], test_templates: list[str], name: str
) -> Split:
    """Facts from a table: every fact is taught in the training wordings; the test asks each fact
    in wordings never seen in training."""
    rng = random.Random(f"{name}-render")
    values = list(table.values())

    def make(key: str, template: str) -> Example:
        ans = table[key]
        return Example(template.format(k=key), ans, _choices(ans, values, rng))

    train = [make(k, t) for k in table for t in train_templates]
    test = [make(k, rng.choice(test_templates)) for k in table]
    return train, test


def _opposites() -> Split:
    both = dict(OPPOSITES)
    both.update({v: k for k, v in OPPOSITES.items() if v not in both})
    return _table_task(
        both,
        ["What is the opposite of {k}?", 'Give the antonym of "{k}".', "The opposite of {k} is?"],
        ["Name a word that means the opposite of {k}.", "Which word is the opposite of {k}?"],
        "opposites",
    )


def _capitals() -> Split:
    return _table_task(
        CAPITALS,
        ["What is the capital of {k}?", "Name the capital city of {k}.", "Which city is the capital of {k}?"],
        ["{k} has its capital in which city?", "Tell me the capital of {k}."],
        "capitals",
    )


def _word_task(
    name: str, templates: list[str], answer: Callable[[str], str], wrong: Callable[[str], list[str]]
) -> Split:
    train, test = _split(WORDS, 0.2, name)
    rng = random.Random(f"{name}-render")

    def make(w: str, template: str) -> Example:
        ans = answer(w)
        return Example(template.format(w=w, s=_spaced(w)), ans, _choices(ans, wrong(w), rng))

    train_ex = [make(w, t) for w in train for t in rng.sample(templates, 2)]  # two wordings each
    return train_ex, [make(w, rng.choice(templates)) for w in test]


def _spelling() -> Split:
    def wrong(w: str) -> list[str]:
        return [_spaced(w[::-1]), _spaced(w[1:]), _spaced(w + w[-1]), _spaced(w[:-1]), _spaced(w[0] + w)]

    return _word_task(
        "spelling",
        ["Spell the word {w}.", "How do you spell {w}?", 'Spell "{w}" letter by letter.'],
        _spaced,
        wrong,
    )


def _reverse() -> Split:
    def wrong(w: str) -> list[str]:
        return [_spaced(w), _spaced(w[::-1][1:]), _spaced(w[-1] + w[:-1]), _spaced(w[1:] + w[0])]

    return _word_task(
        "reverse",
        ["Reverse the letters {s}.", "Write the letters {s} backwards.", "Reverse: {s}"],
        lambda w: _spaced(w[::-1]),
        wrong,
    )


def _count_letters() -> Split:
    def wrong(w: str) -> list[str]:
        return [str(len(w) + d) for d in (-2, -1, 1, 2) if len(w) + d > 0]

    return _word_task(
        "count_letters",
        [
            "How many letters are in the word {w}?",
            'Count the letters in "{w}".',
            "How long is the word {w}, in letters?",
        ],
        lambda w: str(len(w)),
        wrong,
    )


def _format() -> Split:
    """Simple formatting instructions over short word lists (copying with a twist)."""
    rng = random.Random("format-lists")
    lists = set()
    while len(lists) < 600:
        lists.add(tuple(rng.sample(WORDS, rng.randint(2, 4))))
    train_l, test_l = _split(sorted(lists), 0.2, "format")
    rng = random.Random("format-render")

    def make(ws: tuple[str, ...]) -> Example:
        words = " ".join(ws)
        kind = rng.randrange(7)
        if kind == 0:
            n = rng.randint(2, 4)
            p, a = f"Repeat the word {ws[0]} {n} times.", " ".join([ws[0]] * n)
            wrong = [" ".join([ws[0]] * m) for m in range(1, 6) if m != n]
        elif kind == 1:
            p, a = f"Put the word {ws[0]} in quotes.", f'"{ws[0]}"'
            wrong = [ws[0], f"'{ws[0]}'", f'"{ws[-1]}"', f"({ws[0]})"]
        elif kind == 2:
            p, a = f"Join these words with commas: {words}", ", ".join(ws)
            wrong = [words, ", ".join(reversed(ws)), "; ".join(ws), ",".join(ws)]
        elif kind == 3:
            p, a = f"Reverse the order of these words: {words}", " ".join(reversed(ws))
            wrong = [
                words,
                " ".join(ws[1:] + ws[:1]),
                " ".join(ws[-1:] + ws[:-1]),
                " ".join(reversed(ws[1:])),
            ]
        elif kind == 4:
            p, a = f"How many words are in this list: {words}", str(len(ws))
            wrong = [str(len(ws) + d) for d in (-1, 1, 2, 3) if len(ws) + d > 0]
        elif kind == 5:
            p, a = f"What is the first word of: {words}", ws[0]
            wrong = [*list(ws[1:]), ws[0] + "s", "first"]
        else:
            p, a = f"What is the last word of: {words}", ws[-1]
            wrong = [*list(ws[:-1]), ws[-1] + "s", "last"]
        return Example(p, a, _choices(a, wrong, rng))

    return [make(ws) for ws in train_l], [make(ws) for ws in test_l]


def _largest() -> Split:
    """The largest of three two-digit numbers, held out by answer: `unseen` (a fixed fifth of
    25-99) never occurs in a training question or answer, and every test answer is in `unseen`.
    Numbers start at 25 because no other task's answers reach 25, so no held-out number is a
    training answer anywhere in the SFT mix."""
    templates = [
        "Which number is largest: {0}, {1}, {2}?",
        "What is the largest of {0}, {1} and {2}?",
        "Pick the biggest number: {0} {1} {2}",
    ]
    seen, unseen = _split(range(25, 100), 0.2, "largest")
    rng = random.Random("largest-lists")
    train = set()
    while len(train) < 300:
        train.add(tuple(rng.sample(seen, 3)))
    test = []
    for top in sorted(n for n in unseen if n >= 27):  # five questions per answer, with any smaller two
        questions = set()
        while len(questions) < 5:
            nums = [top, *rng.sample(range(25, top), 2)]
            rng.shuffle(nums)
            questions.add(tuple(nums))
        test += sorted(questions)
    rng = random.Random("largest-render")

    def make(nums: tuple[int, ...]) -> Example:
        return Example(rng.choice(templates).format(*nums), str(max(nums)), tuple(map(str, nums)))

    return [make(t) for t in sorted(train)], [make(t) for t in test]


def _grounded() -> Split:
    from llmlab.data.grounded import grounded_split  # its own module (it imports this one)

    return grounded_split()


BUILDERS: dict[str, Callable[[], Split]] = {
    "arithmetic": _arithmetic,
    "plurals": _plurals,
    "opposites": _opposites,
    "capitals": _capitals,
    "spelling": _spelling,
    "reverse": _reverse,
    "count_letters": _count_letters,
    "format": _format,
    "largest": _largest,
    "grounded": _grounded,
    "tool_use": lambda: _tool_use().build(),
}
_CACHE: dict[str, Split] = {}


def _tool_use():
    from llmlab.data import tool_use  # it imports this module

    return tool_use


def task_names() -> list[str]:
    return list(BUILDERS)


def examples(task: str, split: str = "train") -> list[Example]:
    """The examples of a built-in task's split ("train" or "test"); identical on every call."""
    if task not in BUILDERS:
        raise UserError(f"unknown built-in task '{task}'; choose one of: {', '.join(BUILDERS)}")
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    if task not in _CACHE:
        train, test = BUILDERS[task]()
        seen = {ex.prompt for ex in train}
        _CACHE[task] = train, [ex for ex in test if ex.prompt not in seen]  # never test a train question
    train, test = _CACHE[task]
    return list(train if split == "train" else test)


def conversations(name: str = "mix", split: str = "train", seed: int = 0) -> list[list[dict]]:
    """SFT conversations from built-in tasks: `name` is one task or "mix" (all tasks), shuffled with
    `seed`. Each is `[{"role": "user", ...}, {"role": "assistant", ...}]`."""
    names = task_names() if name == "mix" else [name]
    convs = [
        _tool_use().conversation(ex)
        if t == "tool_use"
        else [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
        for t in names
        for ex in examples(t, split)
    ]
    random.Random(seed).shuffle(convs)
    return convs
