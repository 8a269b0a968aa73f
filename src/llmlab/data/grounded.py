"""Synthetic grounded QA: documents about invented entities, and questions answered from them.

Facts no pretraining text contains: towns and inventors with generated names, each described by one
short document, e.g.

    towns/kelmar   "Kelmar is a town on the river Osk. It was founded by Ilsa Dorne in 1742. Its
                    people are known for weaving."
    people/tavo-renhald  "Tavo Renhald was a clockmaker from Brisk. Tavo Renhald invented the
                    copper loom."

and questions about them ("Who founded Kelmar?" → "Ilsa Dorne"). Entities are split into train and
held-out sets, and every generated name (entity or attribute value) belongs to one split only, so a
held-out question's answer is a name never seen in training (years, trades and crafts come from
small shared lists).

Three views of the same data:

* `documents(split)`: `{"id", "title", "text"}` rows for an index (`llmlab rag index`);
* `qa(split)`: `{"question", "answers", "relevant"}` rows for `llmlab rag eval`;
* `grounded_split()`: (train, test) `Example`s for SFT — the question with its gold document and
  distractors in the RAG prompt layout (`llmlab.systems.rag.prompt`), answered with the cited
  source's title and number before the fact, e.g. "Kelmar [2]: Ilsa Dorne". Registered as the
  built-in task `grounded` (`builtin:grounded`, and part of `builtin:mix`).

No two-digit number occurs anywhere (years have four digits), so the data keeps clear of the
numbers that `largest` holds out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmlab.data.synthetic import Example, Split, _choices
from llmlab.systems.rag.prompt import one_line, rag_prompt

# fmt: off
_ONSETS = ["k", "b", "d", "t", "v", "m", "r", "s", "l", "n", "g", "br", "dr", "th", "st", "z", "f", "h"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "sk", "nd"]
RIVERS_PER_SPLIT = 12
TRADES = ["clockmaker", "potter", "weaver", "smith", "glassblower", "carpenter", "brewer", "tailor"]
# 32 crafts, not 8: from 8 a model learns to guess one ("glassmaking") instead of copying the source's.
# A power of two, so `rng.choice` draws the same random bits as from 8 and every other fact is unchanged.
CRAFTS = [
    "weaving", "pottery", "glassmaking", "shipbuilding", "cheese", "lacework", "dyeing", "bells",
    "brewing", "tanning", "ropes", "silverwork", "paper", "salt", "wine", "honey",
    "clocks", "printing", "masonry", "furs", "carpets", "candles", "soap", "boats",
    "barrels", "horses", "wool", "tea", "spices", "maps", "mirrors", "saddles",
]
MATERIALS = ["copper", "glass", "oak", "iron", "wool", "bronze", "clay", "silver"]
DEVICES = ["loom", "lantern", "pump", "compass", "kiln", "bellows", "lathe", "sundial", "press"]
# fmt: on
N_TOWNS, N_PEOPLE = 50, 50  # per split sizes follow from HELDOUT_FRACTION
HELDOUT_FRACTION = 0.3


def _name(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
    return (word + rng.choice(_CODAS)).capitalize()


def _unique_names(rng: random.Random, n: int, make) -> list[str]:
    names: dict[str, None] = {}
    while len(names) < n:
        names.setdefault(make(rng), None)
    return list(names)


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str


@dataclass(frozen=True)
class Entity:
    doc_id: str
    title: str
    text: str
    facts: tuple[Fact, ...]


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _town(rng: random.Random, town: str, founder: str, river: str) -> Entity:
    year, craft = str(rng.randint(1100, 1899)), rng.choice(CRAFTS)
    text = (
        f"{town} is a town on the river {river}. It was founded by {founder} in {year}. "
        f"Its people are known for {craft}."
    )
    facts = (
        Fact(f"Who founded {town}?", founder),
        Fact(f"On which river is {town}?", river),
        Fact(f"In which year was {town} founded?", year),
        Fact(f"What are the people of {town} known for?", craft),
    )
    return Entity(f"towns/{_slug(town)}", town, text, facts)


def _person(rng: random.Random, person: str, home: str, invention: str) -> Entity:
    trade = rng.choice(TRADES)
    text = f"{person} was a {trade} from {home}. {person} invented the {invention}."
    facts = (
        Fact(f"What did {person} invent?", invention),
        Fact(f"Where was {person} from?", home),
        Fact(f"What was the trade of {person}?", trade),
    )
    return Entity(f"people/{_slug(person)}", person, text, facts)


def _entities() -> dict[str, list[Entity]]:
    """{"train": [...], "test": [...]}: every generated name lives in one split only."""
    rng = random.Random("grounded-names")
    n_places = 2 * (N_TOWNS + N_PEOPLE)
    places = _unique_names(rng, n_places + 2 * RIVERS_PER_SPLIT, lambda r: _name(r, 2))
    people = _unique_names(rng, n_places, lambda r: f"{_name(r, 1)} {_name(r, 2)}")
    rivers, places = places[: 2 * RIVERS_PER_SPLIT], places[2 * RIVERS_PER_SPLIT :]
    inventions = [f"{m} {d}" for m in MATERIALS for d in DEVICES]
    rng.shuffle(inventions)
    out: dict[str, list[Entity]] = {}
    for i, split in enumerate(("train", "test")):
        frac = 1 - HELDOUT_FRACTION if split == "train" else HELDOUT_FRACTION
        n_t, n_p = round(N_TOWNS * frac), round(N_PEOPLE * frac)
        own_places = places[i::2]  # disjoint halves of every name pool
        own_people = people[i::2]
        own_rivers = rivers[i::2]
        own_inventions = inventions[i::2]
        r = random.Random(f"grounded-{split}")
        towns = [_town(r, own_places[j], own_people[j], r.choice(own_rivers)) for j in range(n_t)]
        persons = [
            _person(r, own_people[n_t + j], own_places[n_t + j], own_inventions[j % len(own_inventions)])
            for j in range(n_p)
        ]
        out[split] = towns + persons
    return out


_CACHE: dict[str, list[Entity]] = {}


def entities(split: str) -> list[Entity]:
    """The entities of a split ("train" or "test"); identical on every call."""
    if not _CACHE:
        _CACHE.update(_entities())
    return list(_CACHE[split])


def documents(split: str = "test") -> list[dict]:
    """Index rows `{"id", "title", "text"}` for the split's entities."""
    return [{"id": e.doc_id, "title": e.title, "text": e.text} for e in entities(split)]


def qa(split: str = "test") -> list[dict]:
    """QA rows `{"question", "answers", "relevant"}`: every fact of every entity of the split."""
    return [
        {"question": f.question, "answers": [f.answer], "relevant": [e.doc_id]}
        for e in entities(split)
        for f in e.facts
    ]


def _examples(split: str, seed: str) -> list[Example]:
    """Each fact as an SFT example: the gold document among 0-2 distractors, cited by position."""
    ents = entities(split)
    rng = random.Random(seed)
    out = []
    for e in ents:
        for f in e.facts:
            others = rng.sample([o for o in ents if o is not e], rng.randint(0, 2))
            docs = [*others]
            docs.insert(rng.randint(0, len(others)), e)
            n = docs.index(e) + 1
            prompt = rag_prompt(f.question, [(d.title, d.text) for d in docs])
            wrong = {g.answer for o in others for g in o.facts} | {g.answer for g in e.facts}
            answer = f"{e.title} [{n}]: {f.answer}"
            wrong_ones = [f"{e.title} [{n}]: {w}" for w in wrong] + [f"{e.title} [9]: {f.answer}"]
            choices = _choices(answer, wrong_ones, rng)
            out.append(Example(prompt, answer, choices))
    return out


def grounded_split() -> Split:
    """(train, test) SFT examples: train entities for training, held-out entities for testing."""
    return _examples("train", "grounded-train"), _examples("test", "grounded-test")


# ---- fresh entities for midtraining ------------------------------------------------------------------


def heldout_names() -> set[str]:
    """Every generated name the held-out entities use (titles, founders, rivers, homes, inventions):
    what no training example may contain. Years, trades and crafts come from shared lists."""
    shared = set(TRADES) | set(CRAFTS)
    return {e.title for e in entities("test")} | {
        f.answer
        for e in entities("test")
        for f in e.facts
        if f.answer not in shared and not f.answer.isdigit()
    }


def fresh_entities(rng: random.Random, n: int, exclude: set[str]) -> list[Entity]:
    """`n` new entities (towns and people in turn) with newly generated names, none of them in
    `exclude` nor a held-out name: midtraining sees thousands of entities, so it cannot memorise facts
    and must learn to read them from the source."""
    from llmlab.data.copying import HELDOUT as heldout_words

    banned = exclude | heldout_names() | {w.capitalize() for w in heldout_words}
    banned |= {part for b in banned for part in b.split()}  # "Kibi" of "Kibi Dorne" too
    inventions = [f"{m} {d}" for m in MATERIALS for d in DEVICES]
    inventions = [i for i in inventions if i not in banned]

    def name(syllables: int, person: bool = False) -> str:
        while True:
            s = f"{_name(rng, 1)} {_name(rng, 2)}" if person else _name(rng, syllables)
            if s not in banned and not any(part in banned for part in s.split()):
                return s

    out = []
    for i in range(n):
        if i % 2 == 0:
            town = name(2)
            out.append(_town(rng, town, name(2, person=True), name(2)))
        else:
            out.append(_person(rng, name(2, person=True), name(2), rng.choice(inventions)))
    return out


def grounded_conversation(
    rng: random.Random, pool: list[Entity], max_sources: int = 3, questions: int = 1
) -> list[dict]:
    """Facts of random entities of `pool`, answered "<title> [n]: <fact>" (the `grounded` task's layout).

    The first user turn is the RAG prompt: 1..max_sources documents from `pool` and a question about
    one of them. Each of the `questions - 1` turns after it asks about another fact of the same
    sources ("Question: ..." alone), so the sources' tokens are paid for once and every turn is one
    more lookup: copy the entity's title and the number after it, then its fact."""
    docs = rng.sample(pool, rng.randint(1, max_sources))
    sources = [(d.title, d.text) for d in docs]
    messages: list[dict] = []
    for i in range(questions):
        n = rng.randrange(len(docs)) + 1
        f = rng.choice(docs[n - 1].facts)
        prompt = rag_prompt(f.question, sources) if i == 0 else f"Question: {one_line(f.question)}"
        messages += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"{docs[n - 1].title} [{n}]: {f.answer}"},
        ]
    return messages
