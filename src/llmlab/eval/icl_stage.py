"""The speedrun's two evaluation stages and their report sections:

    base_eval   the base model, k-shot: k worked examples from each task's train split in the prompt
    chat_eval   the SFT model, zero-shot through its chat template, on the same held-out examples

Both call `llmlab.eval.icl.evaluate` for every task. Each task says what its test split holds out
("heldout"): some hold out only the wording of facts the training data contains (recall), others
answers never trained on (generalisation); the report shows the two apart.
"""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.plots import plot_accuracy_by_k, plot_grouped_bars
from llmlab.report.render import Block, Figure, Heading, Para, Table

ICL_READS = ("speedrun.eval_tasks", "speedrun.eval_limit", "speedrun.seed")


def evaluate_all(ctx: StageContext, model_dir, shots: list[int], chat: bool) -> dict:
    """{task: `evaluate` result} for the recipe's tasks (all built-ins when it names none)."""
    import llmlab
    from llmlab.eval.icl import evaluate
    from llmlab.eval.tasks import task_names
    from llmlab.io import progress
    from llmlab.train.distributed import resolve_device

    sp = ctx.recipe.speedrun
    model, tok = llmlab.load(model_dir, device=resolve_device(ctx.recipe.train.device))
    tasks = list(sp.eval_tasks) or task_names()
    return {
        t: evaluate(model, tok, t, shots=shots, chat=chat, limit=sp.eval_limit, seed=sp.seed)
        for t in progress(tasks, desc="eval tasks", unit="task")
    }


def accuracy_by_k(task_result: dict) -> dict[str, float]:
    """{str(k): accuracy} from one `evaluate` result ({"shots": [k...], "acc": [...]})."""
    return {str(k): float(a) for k, a in zip(task_result["shots"], task_result["acc"])}


def _result(tasks: dict[str, dict]) -> dict:
    return {
        "tasks": tasks,
        "accuracy": {t: accuracy_by_k(r) for t, r in tasks.items()},
        "chance": {t: r["chance"] for t, r in tasks.items() if r.get("chance") is not None},
        "heldout": {t: r["heldout"] for t, r in tasks.items() if r.get("heldout")},
    }


def best_k(acc: dict[str, float]) -> str | None:
    return max(acc, key=lambda k: acc[k]) if acc else None


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run_base(ctx: StageContext) -> dict:
    shots = ctx.recipe.speedrun.shots
    res = {"shots": shots, **_result(evaluate_all(ctx, ctx.output("pretrain").parent, shots, chat=False))}
    best = mean([max(a.values()) for a in res["accuracy"].values() if a])
    res["summary"] = f"{len(res['tasks'])} tasks, mean best-k accuracy {fmt.num(best)}"
    return res


def run_chat(ctx: StageContext) -> dict:
    res = _result(evaluate_all(ctx, ctx.output("sft").parent, [0], chat=True))
    zero = mean([a["0"] for a in res["accuracy"].values()])
    res["summary"] = f"{len(res['tasks'])} tasks, mean 0-shot accuracy {fmt.num(zero)}"
    return res


def _heldout_groups(heldout: dict[str, str], tasks) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for t in tasks:
        groups.setdefault(heldout.get(t, "held-out examples"), []).append(t)
    return groups


def section_base(r: dict, ctx) -> list[Block]:
    acc, chance, heldout = r.get("accuracy", {}), r.get("chance", {}), r.get("heldout", {})
    ks = sorted({k for a in acc.values() for k in a}, key=int)
    rows = [[t, heldout.get(t, "-"), *(a.get(k) for k in ks), chance.get(t, "-")] for t, a in acc.items()]
    blocks: list[Block] = [
        Heading("Base model: in-context learning"),
        Para(
            "Held-out accuracy with k examples from each task's train split in the prompt. "
            "Multiple choice: the option c with the highest log-likelihood Σⱼ log p(cⱼ | "
            "prompt, c₍<ⱼ₎); generation: greedy output equals the answer after normalising. "
            "Chance is uniform guessing over the options (multiple-choice tasks). 'Held out' says what "
            "the test split keeps from training: only the wording of trained facts (recall) or the answers."
        ),
        Table(["task", "held out", *(f"k={k}" for k in ks), "chance"], rows),
    ]
    png = plot_accuracy_by_k(acc, ctx.fig_dir / "icl.png", chance=chance)
    if png:
        blocks.append(Figure(png, "base model accuracy versus k (dotted: chance)"))
    return blocks


def section_chat(r: dict, ctx) -> list[Block]:
    base = ctx.results.get("base_eval", {})
    base_acc, sft_acc = base.get("accuracy", {}), r.get("accuracy", {})
    chance = {**base.get("chance", {}), **r.get("chance", {})}
    heldout = {**base.get("heldout", {}), **r.get("heldout", {})}
    rows, bars = [], []
    for task, a in sft_acc.items():
        b = base_acc.get(task, {})
        k = best_k(b)
        rows.append(
            [
                task,
                heldout.get(task, "-"),
                chance.get(task, "-"),
                b.get("0"),
                b[k] if k else None,
                k,
                a.get("0"),
            ]
        )
        bars.append((task, b[k] if k else None, a.get("0")))
    blocks: list[Block] = [
        Heading("Base vs SFT"),
        Para(
            "Held-out accuracy: the base model with plain k-shot prompts, the SFT model zero-shot through its chat template."
        ),
        Table(
            ["task", "held out", "chance", "base 0-shot", "base best k-shot", "best k", "SFT 0-shot"], rows
        ),
    ]
    png = plot_grouped_bars(
        bars,
        ctx.fig_dir / "base_vs_sft.png",
        ("base (best k-shot)", "SFT (0-shot, chat)"),
        marks=chance,
        title="base vs SFT",
    )
    if png:
        blocks.append(Figure(png, "held-out accuracy, base vs SFT (dotted: chance, multiple-choice tasks)"))
    examples = [
        [t, ex.get("prompt"), ex.get("answer"), ex.get("prediction")]
        for t, res in r.get("tasks", {}).items()
        for ex in res.get("examples", [])[:2]
    ]
    if examples:
        blocks += [
            Heading("SFT model answers (first held-out examples)", 3),
            Table(["task", "prompt", "answer", "SFT answer"], examples),
        ]
    return blocks


def headline_base(r: dict, results: dict) -> list[list]:
    acc, chance = r.get("accuracy", {}), r.get("chance", {})
    best = mean([max(a.values()) for a in acc.values() if a])
    mc = [t for t in acc if t in chance]
    vs = (
        f"chance {fmt.num(mean([chance[t] for t in mc]))} on the {len(mc)} multiple-choice tasks"
        if mc
        else "-"
    )
    return [["mean held-out accuracy, best k-shot", fmt.num(best), vs]]


def headline_chat(r: dict, results: dict) -> list[list]:
    base_acc = results.get("base_eval", {}).get("accuracy", {})
    heldout = r.get("heldout", {})
    lines = []
    for label, tasks in _heldout_groups(heldout, r.get("accuracy", {})).items():
        sft = mean([r["accuracy"][t]["0"] for t in tasks])
        base = mean([max(base_acc[t].values()) for t in tasks if base_acc.get(t)])
        vs = f"base model best k-shot {fmt.num(base)}" if base is not None else "-"
        n = f"{len(tasks)} task" + ("s" if len(tasks) != 1 else "")
        lines.append([f"SFT 0-shot accuracy, {n} ({label})", fmt.num(sft), vs])
    return lines


BASE_EVAL = Stage(
    "base_eval",
    "k-shot in-context-learning accuracy of the base model",
    run_base,
    section=section_base,
    headline=headline_base,
    reads=(*ICL_READS, "speedrun.shots"),
    needs=("pretrain",),
)
CHAT_EVAL = Stage(
    "chat_eval",
    "zero-shot accuracy of the SFT model through its chat template",
    run_chat,
    section=section_chat,
    headline=headline_chat,
    reads=ICL_READS,
    needs=("sft",),
)
