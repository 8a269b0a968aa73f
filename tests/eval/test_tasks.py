"""The task registry's held-out labels say what each score measures, and the data bears them out."""

from __future__ import annotations

import re

import pytest

from llmlab.data import synthetic
from llmlab.errors import UserError
from llmlab.eval import get_task, task_names
from llmlab.eval.tasks import HELDOUT_LABELS, NEW_QUESTIONS, RECALL, UNSEEN_ANSWERS, task_heldout


def train_answers(task: str) -> set[str]:
    return {ex.answer for ex in synthetic.examples(task, "train")}


MIX_TRAIN_ANSWERS = {a for t in synthetic.task_names() for a in train_answers(t)}


@pytest.mark.parametrize("name", task_names())
def test_every_label_is_true_of_the_data(name):
    label = task_heldout(name)
    assert label in HELDOUT_LABELS and get_task(name).heldout == label
    test = {ex.answer for ex in synthetic.examples(name, "test")}
    if label == RECALL:  # every fact asked was taught, in other words
        assert test <= train_answers(name)
    elif label == NEW_QUESTIONS:  # some answers were trained (else the label would undersell it)
        assert test & MIX_TRAIN_ANSWERS
    else:  # no test answer is a training answer of any task in the SFT mix
        assert label == UNSEEN_ANSWERS and not test & MIX_TRAIN_ANSWERS


def test_the_recall_tasks_are_the_table_facts():
    assert [n for n in task_names() if task_heldout(n) == RECALL] == ["opposites", "capitals"]
    with pytest.raises(UserError, match="unknown task 'nope'"):
        task_heldout("nope")


def test_largest_holds_its_answers_out_of_every_training_split():
    """Not one held-out answer of `largest` occurs in any training split of any task, neither as an
    answer nor as a number in a question, nor in the SFT mix's conversations."""
    test = synthetic.examples("largest", "test")
    held_out = {ex.answer for ex in test}
    assert len(held_out) >= 10 and len(test) >= 50
    for t in synthetic.task_names():
        for ex in synthetic.examples(t, "train"):
            assert ex.answer not in held_out, (t, ex)
            assert not set(re.findall(r"\d+", ex.prompt)) & held_out, (t, ex)
    mix = {m["content"] for c in synthetic.conversations("mix") for m in c if m["role"] == "assistant"}
    assert not mix & held_out
    for ex in test + synthetic.examples("largest", "train"):
        numbers = [int(n) for n in re.findall(r"\d+", ex.prompt)]
        assert len(numbers) == 3 and ex.answer == str(max(numbers)) and ex.choices == tuple(map(str, numbers))


def test_user_tasks_have_no_label(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "1 + 1 =", "answer": "2"}\n')
    assert get_task(f).heldout == ""
