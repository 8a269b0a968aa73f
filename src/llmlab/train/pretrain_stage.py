"""The speedrun's pretraining stage (`llmlab.train.pretrain.pretrain` on the tokenizer stage's
tokenizer) and its report section. An interrupted run resumes from its last checkpoint."""

from __future__ import annotations

import copy

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Code, Heading, Para
from llmlab.train.report import loss_figure, training_result, training_table


def run(ctx: StageContext) -> dict:
    from llmlab.train.pretrain import pretrain

    recipe = copy.deepcopy(ctx.recipe)
    recipe.data.tokenizer = str(ctx.output("tokenizer").resolve())
    out = ctx.dir("pretrain")
    res = training_result(ctx, out, pretrain(recipe, out, resume=ctx.resume, verbose=ctx.verbose))
    res["induction"] = _induction(out)
    res["induction_steps"] = min(recipe.data.induction_steps, recipe.train.steps)
    res["summary"] = (
        f"val loss {fmt.num(res.get('val_loss'))}, {fmt.num(res.get('val_bpb'))} bpb, "
        f"{fmt.human(res.get('params') or 0)} params, {fmt.human(res.get('train_tokens') or 0)} tokens, "
        f"{fmt.human(res.get('flops') or 0)}FLOP"
    )
    return res


def _induction(model_dir) -> dict:
    import llmlab
    from llmlab.eval.induction import copy_by_distance, induction_score

    model, tok = llmlab.load(model_dir, device="cpu")
    res = induction_score(model.eval(), tok)
    res["by_distance"] = {str(g): v for g, v in copy_by_distance(model, tok).items()}
    return res


def section(r: dict, ctx) -> list[Block]:
    blocks: list[Block] = [
        Heading("Pretraining"),
        Para(
            "Objective: minimise the next-token cross-entropy −(1/T) Σₜ log p(xₜ | x₍<ₜ₎); "
            "bits per byte = loss × tokens / (ln 2 × bytes)."
        ),
        training_table(r),
        *loss_figure(r, ctx, "pretrain"),
    ]
    if r.get("induction_steps"):
        blocks.append(
            Para(
                f"The first {r['induction_steps']} steps trained on induction rows (llmlab.data.induction: "
                "short rows of repeated random spans, where a copying head forms), so their loss is on "
                "the random ids a copy predicts (a repeat's 2nd to last), not text: it falls from ln V "
                "towards 0 as the head forms. The corpus follows."
            )
        )
    ind = r.get("induction")
    if ind:
        blocks.append(
            Para(
                f"Induction probe (llmlab.eval.induction): {fmt.num(ind['first'])} nats/token on lists of "
                f"{ind['words']} held-out invented words, {fmt.num(ind['repeat'])} on the same lists repeated "
                "(a model that copies from its context gets the repeat almost free)."
            )
        )
    by = (ind or {}).get("by_distance")
    if by:
        at = ", ".join(f"{fmt.num(v)} after {g}" for g, v in by.items())
        blocks.append(
            Para(
                f"How far back it copies: three held-out words repeated after g other held-out words "
                f"cost {at} (nats/token on the repeat after its first token; a head that copies only "
                "a few tokens back loses the copy as g grows)."
            )
        )
    if r.get("sample"):
        blocks += [Para("End-of-training sample:"), Code(str(r["sample"]))]
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    return [
        [
            "validation bits per byte",
            fmt.num(r.get("val_bpb")),
            f"unigram baseline {fmt.num(r.get('unigram_bpb'))}",
        ],
        [
            "model and budget",
            f"{fmt.human(r.get('params'))} params, {fmt.human(r.get('train_tokens'))} tokens",
            f"{fmt.sci(r.get('flops'))} FLOPs",
        ],
    ]


PRETRAIN = Stage(
    "pretrain",
    "pretrain the base model (next-token cross-entropy)",
    run,
    section=section,
    headline=headline,
    reads=("data", "model", "train"),
    files=("data.source",),
    needs=("tokenizer",),
)
