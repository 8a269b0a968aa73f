"""The speedrun's SFT stage (`llmlab.train.sft.sft` on the pretrained model) and its report section.
An interrupted run resumes from its last checkpoint."""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Heading, Para
from llmlab.train.report import loss_figure, training_result, training_table


def run(ctx: StageContext) -> dict:
    from llmlab.train.sft import sft

    out = ctx.dir("sft")
    base = ctx.output("midtrain" if "midtrain" in ctx.results else "pretrain").parent
    res = training_result(ctx, out, sft(ctx.recipe, base, out, resume=ctx.resume, verbose=ctx.verbose))
    res["summary"] = (
        f"val loss {fmt.num(res.get('base_val_loss'))} → {fmt.num(res.get('val_loss'))} on assistant "
        f"tokens, {res.get('conversations', 0)} conversations, {fmt.human(res.get('tokens') or 0)} tokens"
    )
    return res


def section(r: dict, ctx) -> list[Block]:
    return [
        Heading("Supervised fine-tuning"),
        Para(
            "The same loss on assistant tokens only: −Σₜ mₜ log p(xₜ | x₍<ₜ₎) / Σₜ mₜ, "
            "mₜ = 1 on assistant content and its end-of-turn token."
        ),
        training_table(r),
        *loss_figure(r, ctx, "sft"),
    ]


def headline(r: dict, results: dict) -> list[list]:
    return [
        [
            "val loss on assistant tokens",
            fmt.num(r.get("val_loss")),
            f"base model {fmt.num(r.get('base_val_loss'))}",
        ]
    ]


SFT = Stage(
    "sft",
    "supervised fine-tuning on chat data (assistant-only loss)",
    run,
    section=section,
    headline=headline,
    reads=("sft", "train"),
    files=("sft.data",),
    needs=("pretrain",),
    uses=("midtrain",),
)
