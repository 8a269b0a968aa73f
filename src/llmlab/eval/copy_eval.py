"""Copying from the prompt: held-out spell / reverse / repeat questions on invented words.

    from llmlab.eval.copy_eval import evaluate_copying
    r = evaluate_copying(model, tok)          # {"n", "accuracy", "by_kind", "examples"}

The words are invented and held out (`llmlab.data.copying`): no training set holds them, so an
answer can only be copied (letter by letter, backwards, or n times) from the question. Greedy,
exact match after `icl.normalize`: accuracy = (1/n) Σᵢ [answerᵢ = predictionᵢ]. The speedrun stage
`copy_eval` runs it on the SFT model; its `targets` entry is the issue's `copy` line.
"""

from __future__ import annotations

from llmlab.data import copying
from llmlab.eval.icl import normalize
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Heading, Para, Table
from llmlab.tokenizer.chat import parse_assistant

MAX_NEW_TOKENS = 40


def evaluate_copying(model, tok, limit: int | None = None) -> dict:
    """Greedy answers to the held-out copying questions (the first `limit` of each kind)."""
    from llmlab.generate import generate

    per_kind = len(copying.test_examples()) // len(copying.KINDS)
    keep = per_kind if limit is None else min(limit, per_kind)
    tests = [ex for i, ex in enumerate(copying.test_examples()) if i % per_kind < keep]
    prompts = [tok.render_for_generation([{"role": "user", "content": ex.prompt}]) for ex in tests]
    if max(map(len, prompts)) + MAX_NEW_TOKENS > model.cfg.context:
        note = f"the questions and their answers do not fit the {model.cfg.context}-token context"
        return {"n": 0, "accuracy": None, "by_kind": {}, "examples": [], "note": note}
    outs = generate(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0, stop=None)
    preds = [parse_assistant(t)["content"] for t in outs]
    right = [normalize(p) == normalize(ex.answer) for p, ex in zip(preds, tests)]
    kinds = [copying.KINDS[i // keep] for i in range(len(tests))]
    by_kind = {k: sum(r for r, kk in zip(right, kinds) if kk == k) / keep for k in copying.KINDS}
    examples = [
        {"kind": kinds[i], "prompt": tests[i].prompt, "answer": tests[i].answer, "output": preds[i]}
        for i in range(0, len(tests), keep)
    ]
    return {
        "n": len(tests),
        "accuracy": sum(right) / max(1, len(tests)),
        "by_kind": by_kind,
        "examples": examples,
    }


def run_stage(ctx: StageContext) -> dict:

    model, tok = ctx.load_model("sft")
    res = evaluate_copying(model, tok, limit=ctx.recipe.speedrun.eval_limit)
    res["targets"] = {"copy": {"without": None, "with": res["accuracy"], "signals": dict(res["by_kind"])}}
    by = ", ".join(f"{k} {fmt.num(v)}" for k, v in res["by_kind"].items())
    res["summary"] = (
        res.get("note")
        or f"{res['n']} held-out questions on invented words: {fmt.num(res['accuracy'])} ({by})"
    )
    return res


def section(r: dict, ctx) -> list[Block]:
    if r.get("note"):
        return [Heading("Copying from the prompt"), Para(f"Not measured: {r['note']}.")]
    rows = [[e["kind"], e["prompt"], e["answer"], e["output"]] for e in r.get("examples", [])]
    return [
        Heading("Copying from the prompt"),
        Para(
            "The SFT model on held-out invented words (llmlab.data.copying): spell them, reverse their "
            "letters, repeat them. No training set holds these words, so the answer can only be copied "
            "from the question. Greedy, exact match."
        ),
        Table(
            ["questions", "accuracy", *r.get("by_kind", {})],
            [[r.get("n"), r.get("accuracy"), *r.get("by_kind", {}).values()]],
        ),
        Table(["kind", "question", "answer", "the model"], rows),
    ]


def headline(r: dict, results: dict) -> list[list]:
    if r.get("note"):
        return [["copying accuracy (invented words)", "-", r["note"]]]
    return [["copying accuracy (invented words)", fmt.num(r.get("accuracy")), f"{r.get('n')} questions"]]


COPY_EVAL = Stage(
    "copy_eval",
    "held-out copying (spell, reverse, repeat invented words) by the SFT model",
    run_stage,
    section=section,
    headline=headline,
    reads=("speedrun.eval_limit",),
    needs=("sft",),
)
