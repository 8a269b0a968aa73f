"""Built-in tool-use data: arithmetic a small model cannot do in its head, solved with the calculator.

Each question comes from an operand triple (a, b, c): a in 12-999, b in 12-99, c in 2-99 (two- and
three-digit operands), rendered as one of

    product       "What is 417 × 36?"                                   417 * 36
    quotient      "What is 15012 ÷ 36?"                                 15012 / 36   (exact: a·b ÷ b)
    two steps     "A box holds 417 pens. How many pens are in 36 boxes after 7 are sold?"   417 * 36 - 7
                  "Each of 36 trains carries 417 people and 7 more wait. How many people in all?"   36 * 417 + 7
                  "There are 15012 coins, shared evenly by 36 friends; each gives 7 away. How many does each keep?"

and the conversation the model learns from is the one it should have:

    <|system|># Tools {calculator schema}<|end|>
    <|user|>What is 417 × 36?<|end|>
    <|assistant|><|tool_call|>{"name": "calculator", "arguments": {"expression": "417 * 36"}}<|/tool_call|><|end|>
    <|tool|>calculator<|tool_result|>15012<|/tool_result|><|end|>
    <|assistant|>15012<|end|>

(the system turn is written as the tool block itself, which renders exactly as `tools=[SCHEMA]` does).
The calculator is the built-in one (`llmlab.systems.tools.calculator`, whose schema is kept short so
that a whole conversation fits a 256-token context), so the SFT model works with `--tools calculator`.
Held out: a fifth of the operand triples, so no test question is a training question (`choices`: the
answer and near misses, for multiple-choice scoring).

A call copies the question's numbers in the order they are read, and no question opens with a number:
the start of each operand is then one lookup ("the next number of the question, after a space") and
the rest of it a copy of what followed (docs/speedrun.md, "Where the misses are").
"""

from __future__ import annotations

import random

from llmlab.data.synthetic import Example, Split, _choices, _split
from llmlab.systems.calculator import calculate
from llmlab.systems.tools import calculator
from llmlab.tokenizer.chat import tool_block

N_TRIPLES = 220  # ~175 training conversations: a small share of the SFT mix's tokens


TOOL = calculator  # the built-in one: a model trained here works with `--tools calculator`
SCHEMA = TOOL.schema
_EXPRESSIONS: dict[str, str] = {}  # question → the calculator call that answers it


def _question(a: int, b: int, c: int, kind: int) -> tuple[str, str]:
    if kind == 0:
        return f"What is {a} × {b}?", f"{a} * {b}"
    if kind == 1:
        return f"What is {a * b} ÷ {b}?", f"{a * b} / {b}"
    if kind == 2:
        return f"A box holds {a} pens. How many pens are in {b} boxes after {c} are sold?", f"{a} * {b} - {c}"
    if kind == 3:
        return (
            f"Each of {b} trains carries {a} people and {c} more wait. How many people in all?",
            f"{b} * {a} + {c}",
        )
    c = min(c, a - 1)
    return (
        f"There are {a * b} coins, shared evenly by {b} friends; each gives {c} away. How many does each keep?",
        f"{a * b} / {b} - {c}",
    )


def _numbers(a: int, b: int, c: int) -> set[str]:
    """Every number a question from this triple may show or answer."""
    return {str(x) for x in (a, b, c, a * b, a * b + c, a * b - c, a - min(c, a - 1), min(c, a - 1))}


def build() -> Split:
    """(train, test) Examples; the held-out fifth of the triples is the test split. No triple uses a
    number that the `largest` task holds out (it promises they occur in no training split)."""
    train_t, test_t = _triples()
    rng = random.Random("tool-use-render")

    def make(t: tuple[int, int, int]) -> Example:
        prompt, expression = _question(*t, kind=rng.randrange(5))
        _EXPRESSIONS[prompt] = expression
        answer = calculate(expression)
        near = [str(int(answer) + d) for d in (1, -1, 10, -10, 100, t[1], -t[1])]  # plausible slips
        return Example(prompt, answer, _choices(answer, near, rng))

    return [make(t) for t in train_t], [make(t) for t in test_t]


def heldout_pairs() -> set[tuple[int, int]]:
    """The (a, b) operand pairs of the held-out triples: no training question may use them."""
    return {(a, b) for a, b, _ in _triples()[1]}


def _triples() -> tuple[list, list]:
    from llmlab.data.synthetic import examples

    reserved = {ex.answer for ex in examples("largest", "test")}
    rng = random.Random("tool-use-triples")
    triples: set[tuple[int, int, int]] = set()
    while len(triples) < N_TRIPLES:
        t = (rng.randint(12, 999), rng.randint(12, 99), rng.randint(2, 99))
        if not _numbers(*t) & reserved:
            triples.add(t)
    return _split(sorted(triples), 0.2, "tool-use")


def fresh_conversation(
    rng: random.Random, banned_pairs: set[tuple[int, int]], reserved: set[str], questions: int = 1
) -> list[dict]:
    """A tool-use conversation on new random triples (none of `banned_pairs`, no `reserved` number):
    `questions` of them in turn after one system turn, each asked, called, answered. More questions
    per conversation put more copies (question → call, result → answer) in every training step
    for the same tokens, since the tool schema is paid for once."""
    messages = []
    for _ in range(questions):
        while True:
            t = (rng.randint(12, 999), rng.randint(12, 99), rng.randint(2, 99))
            if t[:2] not in banned_pairs and not _numbers(*t) & reserved:
                break
        prompt, expression = _question(*t, kind=rng.randrange(5))
        turn = _conversation(prompt, expression, calculate(expression))
        messages += turn if not messages else turn[1:]
    return messages


def expression_for(ex: Example) -> str:
    """The calculator call that answers a tool-use example."""
    if ex.prompt not in _EXPRESSIONS:
        build()
    return _EXPRESSIONS[ex.prompt]


def conversation(ex: Example) -> list[dict]:
    """The SFT conversation for one example: the tools, the question, the call, its result, the answer."""
    expression = expression_for(ex)
    return _conversation(ex.prompt, expression, ex.answer)


def _conversation(prompt: str, expression: str, answer: str) -> list[dict]:
    call = {"name": "calculator", "arguments": {"expression": expression}}
    return [
        {"role": "system", "content": tool_block([SCHEMA])},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "calculator", "content": calculate(expression)},
        {"role": "assistant", "content": answer},
    ]
