"""The evaluation task registry: built-in synthetic tasks, and users' own tasks from JSONL.

A task is a list of test examples plus a pool of train examples that k-shot prompts draw from. Its
`kind` says how it is scored:

    "mc"   multiple choice: the option with the highest log-likelihood is the model's answer;
    "gen"  generation: greedy decoding, compared to the answer by normalised exact match.

A user task is a JSONL file, one example per line, either format:

    {"context": "The capital of France is", "choices": ["Paris", "Rome"], "answer": 0}   (mc; answer = an
                                                                        index or the text of a choice)
    {"prompt": "2 + 2 =", "answer": "4"}                                                  (gen)

An optional `"split": "train"` puts a line in the few-shot pool instead of the test set; a file
with no train lines draws its shots from the other test examples (never the one being asked).

Each built-in task also says what its test split holds out (`Task.heldout`, `task_heldout(name)`),
so a score can be read for what it is: RECALL (the facts are trained, only the wording is new),
NEW_QUESTIONS (unseen questions whose answers may be trained answers) or UNSEEN_ANSWERS (no test
answer is the answer of any training question of the SFT mix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from llmlab.data import synthetic
from llmlab.data.synthetic import Example
from llmlab.errors import UserError
from llmlab.io import read_jsonl

KINDS = ("mc", "gen")

# What a built-in task's test split holds out, from weakest to strongest claim. The report labels
# accuracy with it: a recall score says the model kept what SFT taught, not that it generalises.
RECALL = "recall: trained facts, new wording"  # every test answer is the answer of a training question
NEW_QUESTIONS = "new questions; answers may also be trained"  # e.g. 3 + 4 held out, but 7 is trained
UNSEEN_ANSWERS = "unseen answers"  # no test answer is the answer of any training question, in any task
HELDOUT_LABELS = (RECALL, NEW_QUESTIONS, UNSEEN_ANSWERS)


class Builtin(NamedTuple):
    kind: str  # default scoring (any task with choices can also be scored "mc")
    heldout: str  # one of HELDOUT_LABELS
    description: str


BUILTINS = {
    "arithmetic": Builtin(
        "gen", NEW_QUESTIONS, "a + b, a - b with a, b <= 12 (held-out pairs; b + a often trained)"
    ),
    "plurals": Builtin("gen", UNSEEN_ANSWERS, "plural of an English noun (held-out regular nouns)"),
    "opposites": Builtin("mc", RECALL, "antonym from a table (every pair trained; held-out wording)"),
    "capitals": Builtin(
        "mc", RECALL, "capital of a country from a table (every pair trained; held-out wording)"
    ),
    "spelling": Builtin(
        "gen",
        UNSEEN_ANSWERS,
        "spell a word letter by letter (held-out words; reverse's questions spell most)",
    ),
    "reverse": Builtin("gen", UNSEEN_ANSWERS, "reverse spaced letters (held-out words)"),
    "count_letters": Builtin(
        "mc", NEW_QUESTIONS, "number of letters in a word (held-out words; answers 3-6 trained)"
    ),
    "format": Builtin(
        "gen", NEW_QUESTIONS, "repeat / quote / join / reorder / count / pick words (held-out lists)"
    ),
    "largest": Builtin(
        "gen", UNSEEN_ANSWERS, "largest of three numbers (held-out numbers are in no training split)"
    ),
}


@dataclass
class Task:
    name: str
    kind: str  # "mc" | "gen"
    test: list[Example]
    train: list[Example] = field(default_factory=list)  # the few-shot pool ([] = use other test items)
    description: str = ""
    heldout: str = ""  # one of HELDOUT_LABELS for a built-in task; "" = not known (a user's task)

    def shots_pool(self, i: int) -> list[Example]:
        """Examples a k-shot prompt for test item i may use."""
        return self.train if self.train else self.test[:i] + self.test[i + 1 :]


def task_names() -> list[str]:
    """Names of the built-in tasks."""
    return list(BUILTINS)


def _check_builtin(name: str) -> None:
    if name not in BUILTINS:
        raise UserError(
            f"unknown task '{name}'; choose a built-in task ({', '.join(BUILTINS)}) or pass a .jsonl task file"
        )


def task_heldout(name: str) -> str:
    """What the built-in task `name` holds out: one of HELDOUT_LABELS."""
    _check_builtin(name)
    return BUILTINS[name].heldout


def builtin_task(name: str, kind: str | None = None) -> Task:
    _check_builtin(name)
    spec = BUILTINS[name]
    train, test = synthetic.examples(name, "train"), synthetic.examples(name, "test")
    return Task(name, kind or spec.kind, test, train, spec.description, spec.heldout)


def _example_from(obj: object, where: str) -> tuple[Example, str, str]:
    """One JSONL line → (example, kind, split)."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    split = obj.get("split", "test")
    if split not in ("train", "test"):
        raise UserError(f"{where}: split must be 'train' or 'test', got {split!r}")
    if "choices" in obj:
        ctx, choices, ans = obj.get("context", obj.get("prompt")), obj["choices"], obj.get("answer")
        if not isinstance(ctx, str):
            raise UserError(f"{where}: a multiple-choice line needs a string 'context'")
        if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) for c in choices)):
            raise UserError(f"{where}: 'choices' must be a list of at least two strings")
        if isinstance(ans, int) and not isinstance(ans, bool):
            if not 0 <= ans < len(choices):
                raise UserError(f"{where}: answer index {ans} is out of range for {len(choices)} choices")
            ans = choices[ans]
        elif ans not in choices:
            raise UserError(f"{where}: 'answer' must be an index into 'choices' or one of them, got {ans!r}")
        return Example(ctx, ans, tuple(choices)), "mc", split
    if "prompt" in obj and "answer" in obj:
        if not isinstance(obj["prompt"], str) or not isinstance(obj["answer"], str):
            raise UserError(f"{where}: 'prompt' and 'answer' must be strings")
        return Example(obj["prompt"], obj["answer"]), "gen", split
    raise UserError(
        f'{where}: expected {{"context", "choices", "answer"}} or {{"prompt", "answer"}} '
        f"(keys found: {', '.join(sorted(obj)) or 'none'})"
    )


def load_task_file(path: str | Path) -> Task:
    """A user task from JSONL (see the module docstring); errors name `file:line`."""
    path = Path(path)
    train, test, kinds = [], [], set()
    for where, obj in read_jsonl(path, "task file"):
        ex, kind, split = _example_from(obj, where)
        kinds.add(kind)
        (train if split == "train" else test).append(ex)
    if len(kinds) > 1:
        raise UserError(f"{path}: mixes multiple-choice and generation lines; use one format per file")
    if not test:
        raise UserError(f'{path}: no test examples (lines without "split": "train")')
    return Task(path.stem, kinds.pop(), test, train, f"user task from {path}")


def get_task(name_or_path: str | Path, kind: str | None = None) -> Task:
    """A built-in task by name, or a user task from a .jsonl path. `kind` overrides the scoring
    ("mc" needs choices on every example)."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown scoring kind '{kind}'; choose mc or gen")
    s = str(name_or_path)
    if s.endswith(".jsonl") or Path(s).is_file():
        task = load_task_file(s)
        if kind:
            task.kind = kind
    else:
        task = builtin_task(s, kind)
    if task.kind == "mc" and not all(ex.choices for ex in task.test):
        raise UserError(f"task {task.name}: multiple-choice scoring needs 'choices' on every example")
    return task
