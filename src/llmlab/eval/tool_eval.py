"""Accuracy with the calculator and without it, on the same held-out tool-use questions.

    from llmlab.eval.tool_eval import evaluate_tool_use
    r = evaluate_tool_use(model, tok, limit=50)
    r["with_tools"], r["without_tools"], r["called"]

with tools      the question as a user turn with the calculator in the system turn (`data.tool_use`),
                greedy; each call the model closes runs mid-turn (`generate(..., tools=[...])`) and the
                answer is what it writes after the last result
without tools   the same question with no tools offered, greedy; the answer is its reply's content
                (a call it writes anyway runs nowhere and counts as wrong)

Both are exact match after normalising (`icl.normalize`): accuracy = (1/n) Σᵢ [answerᵢ = predictionᵢ].
`called` is the fraction of with-tools answers in which the model made at least one call, and
`call_right` the fraction whose first call is exactly the expression that answers the question (up
to spaces): copying the operands into the call is half of the task, reading the result back the other.
The speedrun stage `tool_eval` runs this on the SFT model and adds the with/without table and bars.
"""

from __future__ import annotations

import json

from llmlab.data import synthetic, tool_use
from llmlab.eval.icl import normalize
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.plots import plot_grouped_bars
from llmlab.report.render import Block, Figure, Heading, Para, Table
from llmlab.tokenizer.chat import END, HEADERS, TOOL_RESULT, parse_assistant

MAX_NEW_TOKENS = 48


def answer_after_tools(text: str) -> str:
    """The model's answer in a with-tools transcript: the text after the last forced `<|assistant|>`
    (all of it when no tool ran), without its tool calls."""
    if TOOL_RESULT in text:
        text = text.rsplit(HEADERS["assistant"], 1)[-1]
    return parse_assistant(text.removesuffix(END))["content"]


def evaluate_tool_use(model, tok, limit: int | None = 50, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """{"n", "with_tools", "without_tools", "called", "examples"} on the held-out tool-use questions."""
    test, with_prompts, plain_prompts = [], [], []
    for ex in synthetic.examples("tool_use", "test")[:limit]:
        q = [{"role": "user", "content": ex.prompt}]
        w = tok.render_for_generation(q, tools=[tool_use.SCHEMA])
        if len(w) + max_new_tokens <= model.cfg.context:  # a question must fit with its tools and answer
            test.append(ex)
            with_prompts.append(w)
            plain_prompts.append(tok.render_for_generation(q))
    if not test:
        note = f"no question fits the {model.cfg.context}-token context with the tool schema and an answer"
        return {
            "n": 0,
            "with_tools": None,
            "without_tools": None,
            "called": None,
            "call_right": None,
            "examples": [],
            "note": note,
        }
    r = with_and_without(model, tok, test, with_prompts, plain_prompts, [tool_use.TOOL], 2, max_new_tokens)
    rows = r.pop("all")
    r["called"] = sum(TOOL_RESULT in e["transcript"] for e in rows) / len(test)
    right = [
        first_expression(e["transcript"]) == _squash(tool_use.expression_for(ex)) for e, ex in zip(rows, test)
    ]
    r["call_right"] = sum(right) / len(test)
    return r


def _squash(expression: str) -> str:
    return "".join(expression.split())


def first_expression(transcript: str) -> str | None:
    """The `expression` argument of the first calculator call in a transcript (spaces removed), or None."""
    calls = parse_assistant(transcript.split(TOOL_RESULT, 1)[0].rsplit(HEADERS["tool"], 1)[0])["tool_calls"]
    if not calls:
        return None
    expression = json.loads(calls[0]["function"]["arguments"]).get("expression")
    return _squash(expression) if isinstance(expression, str) else None


def with_and_without(
    model, tok, tests, with_prompts, plain_prompts, tools, rounds: int, max_new_tokens: int
) -> dict:
    """Greedy answers with the tools (calls run mid-turn, up to `rounds` of them) and without, scored by
    exact match: {"n", "with_tools", "without_tools", "examples" (the first 5), "all"}."""
    from llmlab.generate import generate

    kw = dict(max_new_tokens=max_new_tokens, temperature=0, stop=None)
    with_out = generate(model, tok, with_prompts, tools=tools, max_tool_rounds=rounds, **kw)
    plain_out = generate(model, tok, plain_prompts, **kw)
    rows = [
        {
            "prompt": ex.prompt,
            "answer": ex.answer,
            "with_tools": answer_after_tools(t),
            "without_tools": parse_assistant(p)["content"],
            "transcript": t,
        }
        for ex, t, p in zip(tests, with_out, plain_out)
    ]

    def acc(key: str) -> float:
        return sum(normalize(r[key]) == normalize(r["answer"]) for r in rows) / max(1, len(rows))

    return {
        "n": len(rows),
        "with_tools": acc("with_tools"),
        "without_tools": acc("without_tools"),
        "examples": rows[:5],
        "all": rows,
    }


# ---- the speedrun stage -----------------------------------------------------------------------------------


def run_stage(ctx: StageContext) -> dict:

    model, tok = ctx.load_model("sft")
    res = evaluate_tool_use(model, tok, limit=ctx.recipe.speedrun.eval_limit)
    res["targets"] = {
        "arithmetic_tool": {
            "without": res["without_tools"],
            "with": res["with_tools"],
            "signals": {"calls right": res.get("call_right")},
        }
    }
    res["summary"] = res.get("note") or (
        f"{res['n']} held-out questions: {fmt.num(res['with_tools'])} with the calculator, "
        f"{fmt.num(res['without_tools'])} without, calls right {fmt.num(res['call_right'])}"
    )
    return res


def section(r: dict, ctx) -> list[Block]:
    if r.get("note"):
        return [Heading("Tool use: the calculator"), Para(f"Not measured: {r['note']}.")]
    blocks: list[Block] = [
        Heading("Tool use: the calculator"),
        Para(
            "The SFT model on held-out tool-use questions (two- and three-digit × and ÷, two-step word "
            "problems; a fifth of the operand triples never trained on), greedy. With tools: the calculator "
            "is offered in the system turn and every call the model closes runs mid-turn. Without: the same "
            "question, no tools. Exact match."
        ),
        Table(
            ["questions", "with tools", "without tools", "answers that called the tool", "calls right"],
            [[r.get("n"), r.get("with_tools"), r.get("without_tools"), r.get("called"), r.get("call_right")]],
        ),
    ]
    png = plot_grouped_bars(
        [("tool_use", r.get("without_tools"), r.get("with_tools"))],
        ctx.fig_dir / "tool_use.png",
        ("without tools", "with the calculator"),
        title="held-out tool-use accuracy",
    )
    if png:
        blocks.append(Figure(png, "held-out accuracy on tool-use questions, without and with the calculator"))
    rows = [
        [e["prompt"], e["answer"], e["with_tools"], e["without_tools"]] for e in r.get("examples", [])[:3]
    ]
    if rows:
        blocks += [
            Heading("Answers (first held-out questions)", 3),
            Table(["question", "answer", "with", "without"], rows),
        ]
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    if r.get("note"):
        return [["tool-use accuracy", "-", r["note"]]]
    return [
        [
            "tool-use accuracy with the calculator",
            fmt.num(r.get("with_tools")),
            f"without {fmt.num(r.get('without_tools'))}",
        ]
    ]


TOOL_EVAL = Stage(
    "tool_eval",
    "held-out accuracy of the SFT model with the calculator and without",
    run_stage,
    section=section,
    headline=headline,
    reads=("speedrun.eval_limit",),
    needs=("sft",),
)
