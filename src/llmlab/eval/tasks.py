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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.data import synthetic
from llmlab.data.synthetic import Example
from llmlab.errors import UserError

KINDS = ("mc", "gen")

# How each built-in task is scored by default (any task with choices can also be scored "mc").
BUILTIN_KINDS = {
    "arithmetic": "gen",
    "plurals": "gen",
    "opposites": "mc",
    "capitals": "mc",
    "spelling": "gen",
    "reverse": "gen",
    "count_letters": "mc",
    "format": "gen",
}
DESCRIPTIONS = {
    "arithmetic": "a + b, a - b with a, b <= 12 (held-out pairs)",
    "plurals": "plural of an English noun (held-out nouns)",
    "opposites": "antonym from a table (held-out wording)",
    "capitals": "capital of a country from a table (held-out wording)",
    "spelling": "spell a word letter by letter (held-out words)",
    "reverse": "reverse spaced letters (held-out words)",
    "count_letters": "number of letters in a word (held-out words)",
    "format": "repeat / quote / join / reorder / count / pick words (held-out lists)",
}


@dataclass
class Task:
    name: str
    kind: str  # "mc" | "gen"
    test: list[Example]
    train: list[Example] = field(default_factory=list)  # the few-shot pool ([] = use other test items)
    description: str = ""

    def shots_pool(self, i: int) -> list[Example]:
        """Examples a k-shot prompt for test item i may use."""
        return self.train if self.train else self.test[:i] + self.test[i + 1 :]


def task_names() -> list[str]:
    """Names of the built-in tasks."""
    return list(BUILTIN_KINDS)


def builtin_task(name: str, kind: str | None = None) -> Task:
    if name not in BUILTIN_KINDS:
        raise UserError(
            f"unknown task '{name}'; choose a built-in task ({', '.join(BUILTIN_KINDS)}) "
            "or pass a .jsonl task file"
        )
    kind = kind or BUILTIN_KINDS[name]
    return Task(
        name, kind, synthetic.examples(name, "test"), synthetic.examples(name, "train"), DESCRIPTIONS[name]
    )


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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such task file") from None
    train, test, kinds = [], [], set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
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
