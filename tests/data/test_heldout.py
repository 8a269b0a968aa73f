"""No held-out item of the demo's evaluations occurs in any training set the demo builds.

Training sets: the SFT mix (every built-in task's train split), the midtraining conversations as the
demo and tools recipes generate them, the reward/DPO/GRPO data (built from the same train splits) and the
tokenizer's extra text. Held-out items: tool-use operand pairs, invented names of held-out
entities, invented copying words, and every test question verbatim.
"""

import re

import pytest

from llmlab.config import load_recipe
from llmlab.data import agent_tasks, copying, grounded, midtrain, synthetic, tool_use


def _texts(conv: list[dict]) -> list[str]:
    from llmlab.tokenizer.chat import tool_call_json

    return [m["content"] for m in conv] + [tool_call_json(c) for m in conv for c in m.get("tool_calls", [])]


@pytest.fixture(scope="module", params=["cpu-demo", "shakespeare-cpu"])
def training_texts(request) -> list[str]:
    recipe = load_recipe(f"recipes/{request.param}.toml")
    m = recipe.midtrain
    weights = {f: getattr(m, f) for f in midtrain.FAMILIES}
    convs = midtrain.conversations(m.conversations, m.seed, weights, m.questions)
    convs += synthetic.conversations("mix", "train")  # every built-in SFT source is a train split of it
    corpus = copying.corpus_documents()  # the generated pretraining corpus "copying"
    return (
        [t for c in convs for t in _texts(c)]
        + midtrain.sample_text(recipe.data.tokenizer_sample or 10)
        + corpus
    )


def _whole_words(items) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(sorted(map(re.escape, items), key=len, reverse=True)) + r")\b", re.I)


def test_no_heldout_name_or_word_occurs_in_training(training_texts):
    items = midtrain.heldout_items()
    names = _whole_words(items["names"] | items["words"])
    hits = [m.group(0) for t in training_texts for m in [names.search(t)] if m]
    assert not hits, f"held-out items in training: {sorted(set(hits))[:10]}"


_EXPR = re.compile(r'"expression": "(\d+) [*/] (\d+)|calculator (\d+) [*] (\d+)')


def _operand_pairs(texts: list[str]) -> set[tuple[int, int]]:
    """(a, b) of every calculator call "a * b" / "a / b" in the texts (chat calls and corpus lines)."""
    found = [[int(x) for x in g if x] for t in texts for g in _EXPR.findall(t)]
    return {(a, b) for a, b in found}


def test_no_heldout_operand_pair_is_trained(training_texts):
    pairs = midtrain.heldout_items()["operand_pairs"]
    trained = _operand_pairs(training_texts)
    quotients = {(a * b, b) for a, b in pairs}  # "a·b / b" asks the same triple
    assert trained and not (trained & (pairs | quotients))


def test_no_test_question_is_a_training_question(training_texts):
    train = set(training_texts)
    tests = (
        [ex.prompt for ex in synthetic.examples("tool_use", "test")]
        + [ex.prompt for ex in copying.test_examples()]
        + [ex.prompt for ex in agent_tasks.test_examples()]
        + [q["question"] for q in grounded.qa("test")]
    )
    assert not [q for q in tests if q in train]


def test_the_checks_can_fail():
    """A held-out name and a held-out operand pair planted in training-like text are both found."""
    name = sorted(grounded.heldout_names())[0]
    assert _whole_words(grounded.heldout_names()).search(f"Who founded {name}?")
    a, b = sorted(tool_use.heldout_pairs())[0]
    planted = tool_use._conversation(f"What is {a} × {b}?", f"{a} * {b}", str(a * b))
    texts = [*_texts(planted), f"{a} times {b}: calculator {a} * {b} gives {a * b}."]
    assert _operand_pairs(texts[-1:]) == _operand_pairs(texts[:-1]) == {(a, b)}
