"""The two-step agent task, held out: search the index for a town, then compute with its year.

    from llmlab.systems.agent_eval import evaluate_agent
    r = evaluate_agent(model, tok, index)     # {"n", "with_tools", "without_tools", "searched", ...}

with tools      `search` (the RAG index, BM25) and `calculator` in the system turn; every call the model
                closes runs mid-turn (`generate(..., tools=...)`); the answer is what it writes after
                the last result
without tools   the same question alone

Questions come from `llmlab.data.agent_tasks` (held-out towns, whose years no training text holds).
Exact match: accuracy = (1/n) Σᵢ [answerᵢ = predictionᵢ]. The speedrun stage `agent_eval` runs it on the
SFT model with the index stage's index; its `targets` entry is the issue's `agent` line.
"""

from __future__ import annotations

from llmlab.data import agent_tasks
from llmlab.eval.tool_eval import with_and_without
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Code, Heading, Para, Table
from llmlab.systems.tools import set_search_backend

MAX_NEW_TOKENS = 80  # sampled tokens (results are forced): two calls of ~26 tokens each and the answer
MODE = "bm25"
ROOM = 160  # tokens after the prompt: two calls, a passage, a result and the answer


def evaluate_agent(model, tok, index, limit: int | None = None) -> dict:
    """Greedy answers to the held-out agent questions with search + calculator, and without tools."""
    tests = agent_tasks.test_examples()[:limit]
    users = [[{"role": "user", "content": ex.prompt}] for ex in tests]
    with_prompts = [tok.render_for_generation(u, tools=agent_tasks.SCHEMAS) for u in users]
    if max(map(len, with_prompts)) + ROOM > model.cfg.context:
        note = f"the questions with two tool schemas and their results do not fit the {model.cfg.context}-token context"
        return {
            "n": 0,
            "with_tools": None,
            "without_tools": None,
            "searched": None,
            "examples": [],
            "note": note,
        }
    plain_prompts = [tok.render_for_generation(u) for u in users]
    set_search_backend(index.as_search_backend(MODE))
    try:
        r = with_and_without(
            model, tok, tests, with_prompts, plain_prompts, agent_tasks.TOOLS, 3, MAX_NEW_TOKENS
        )
    finally:
        set_search_backend(None)
    r["searched"] = sum('"search"' in e["transcript"] for e in r.pop("all")) / max(1, len(tests))
    r["examples"] = r["examples"][:3]
    return r


def run_stage(ctx: StageContext) -> dict:
    from llmlab.systems.rag.index import load_index

    model, tok = ctx.load_model("sft")
    res = evaluate_agent(model, tok, load_index(ctx.output("index", 0)), limit=ctx.recipe.speedrun.eval_limit)
    res["targets"] = {
        "agent": {
            "without": res["without_tools"],
            "with": res["with_tools"],
            "signals": {"searched": res.get("searched")},
        }
    }
    res["summary"] = res.get("note") or (
        f"{res['n']} held-out questions: {fmt.num(res['with_tools'])} with search + calculator, "
        f"{fmt.num(res['without_tools'])} without"
    )
    return res


def section(r: dict, ctx) -> list[Block]:
    if r.get("note"):
        return [Heading("An agent task: search, then compute"), Para(f"Not measured: {r['note']}.")]
    blocks: list[Block] = [
        Heading("An agent task: search, then compute"),
        Para(
            'Held-out questions such as "What year was 40 years after Kelmar was founded?" about '
            "invented towns no training text describes. With tools: `search` over the RAG index (BM25) "
            "and the calculator, each call run mid-turn; without: the question alone. Exact match."
        ),
        Table(
            ["questions", "with search + calculator", "without tools", "answers that searched"],
            [[r.get("n"), r.get("with_tools"), r.get("without_tools"), r.get("searched")]],
        ),
    ]
    ex = (r.get("examples") or [None])[0]
    if ex:
        blocks += [
            Heading("A transcript (the first held-out question)", 3),
            Code(f"user: {ex['prompt']}\n{ex['transcript']}\ngold: {ex['answer']}"),
        ]
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    if r.get("note"):
        return [["agent task (search → calculator)", "-", r["note"]]]
    with_, without = fmt.num(r.get("with_tools")), fmt.num(r.get("without_tools"))
    return [["agent task (search → calculator)", with_, f"without tools {without}"]]


AGENT_EVAL = Stage(
    "agent_eval",
    "held-out two-step agent task (search, then the calculator) by the SFT model",
    run_stage,
    section=section,
    headline=headline,
    reads=("speedrun.eval_limit",),
    needs=("sft", "index"),
    requires=("bm25s",),
)
