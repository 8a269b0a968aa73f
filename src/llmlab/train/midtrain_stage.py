"""The speedrun's midtraining stage (between pretraining and SFT) and its report section.

Midtraining is SFT's loss and loop (`llmlab.train.sft.sft` with the [midtrain] section) on many
generated conversations (`llmlab.data.midtrain`): tool calls, grounded answers, copying and agent
transcripts, each on new content. It is off unless `midtrain.enabled`; SFT then starts from its output.
"""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.plots import plot_phase_signal
from llmlab.report.render import Block, Figure, Heading, Para, Table
from llmlab.train.report import loss_figure, training_result, training_table

DOCS = 'docs/speedrun.md, "Phase changes, checked"'

# family → what its conversations teach (the [midtrain] weights say which were trained)
FAMILIES = {
    "tool_use": "calculator calls on new operands",
    "grounded": "answers cited from numbered sources about invented towns and people",
    "copying": "spelling, reversing and repeating invented words",
    "agent": "search-then-calculate transcripts",
}


def run(ctx: StageContext) -> dict:
    from llmlab.train.sft import sft

    out = ctx.dir("midtrain")
    base = ctx.output("pretrain").parent
    summary = sft(ctx.recipe, base, out, resume=ctx.resume, verbose=ctx.verbose, section="midtrain")
    res = training_result(ctx, out, summary)
    m = ctx.recipe.midtrain
    res["weights"] = {f: getattr(m, f) for f in ("tool_use", "grounded", "copying", "agent")}
    res["summary"] = (
        f"val loss {fmt.num(res.get('base_val_loss'))} → {fmt.num(res.get('val_loss'))} on assistant "
        f"tokens, {res.get('conversations', 0)} generated conversations, {fmt.human(res.get('tokens') or 0)} tokens"
    )
    if res.get("call_watch"):
        res["summary"] = f"{call_line(res['call_watch'])}; {res['summary']}"
    return res


def call_line(w: dict) -> str:
    """One line on the calculator call's phase change (train/call_watch.py)."""
    last = w["checks"][-1][1] if w.get("checks") else None
    if w.get("formed_at") is not None:
        return f"{w['steps']} steps, calculator call formed at step {w['formed_at']}"
    return (
        f"{w['steps']} steps, the calculator call did NOT form (calls right {fmt.num(last)} on dev "
        f"questions, goal ≥ {w['goal']}; see {DOCS})"
    )


def section(r: dict, ctx) -> list[Block]:
    w = r.get("weights", {})
    trained = ", ".join(FAMILIES[k] for k, v in w.items() if v and k in FAMILIES) or "none"
    return [
        Heading("Midtraining"),
        Para(
            "SFT's loss (assistant tokens only) on generated conversations in the chat template, each on "
            "new content, so the model learns the special tokens and formats before SFT instead of facts. "
            f"Trained here: {trained}."
        ),
        Table(["family", "weight"], [[k, v] for k, v in w.items()]),
        training_table(r),
        *loss_figure(r, ctx, "midtrain"),
        *_call_watch(r.get("call_watch"), ctx),
    ]


def _call_watch(w: dict | None, ctx) -> list[Block]:
    if not w:
        return []
    blocks: list[Block] = [
        Para(
            "The calculator needs one phase change of midtraining: copying the question's operands into "
            "the call. From the middle of the planned steps on, every 25 steps the stage asked 24 "
            "development questions (fresh, none held out) and counted the first calls that are right; "
            f"while they stayed under {w['goal']:g} the run went on, up to {w['cap']} steps. "
            f"{call_line(w)}."
        )
    ]
    png = plot_phase_signal(
        w.get("checks") or [],
        ctx.fig_dir / "call_watch.png",
        w["goal"],
        w.get("formed_at"),
        "calls right (dev questions)",
        "the calculator call during midtraining",
        below=False,
    )
    if png:
        blocks.append(Figure(png, "calculator calls right on development questions through midtraining"))
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    return [["midtraining val loss", fmt.num(r.get("val_loss")), f"before {fmt.num(r.get('base_val_loss'))}"]]


MIDTRAIN = Stage(
    "midtrain",
    "midtraining on generated conversations (the families [midtrain] weights)",
    run,
    section=section,
    headline=headline,
    reads=("midtrain", "train"),
    needs=("pretrain",),
    enabled=lambda recipe: recipe.midtrain.enabled,
)
