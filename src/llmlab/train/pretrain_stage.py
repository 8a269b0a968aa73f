"""The speedrun's pretraining stage (`llmlab.train.pretrain.pretrain` on the tokenizer stage's
tokenizer) and its report section. An interrupted run resumes from its last checkpoint.

When the recipe starts on induction rows, every later target depends on the copying head they grow,
so the stage checks it twice and stops the run, with one line that says which check failed, rather
than hand a base model that cannot copy to midtraining:

    formed:  the held-out repeat loss on induction rows fell below data.induction_goal
             before the phase's cap (train/induction_phase.py)
    copies:  on held-out text (eval/induction.py), the repeat of a list of invented words costs
             < COPIES_TEXT nats/token after the text phase: the head survived and reads text
"""

from __future__ import annotations

import copy

from llmlab.errors import UserError
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.plots import plot_phase_signal
from llmlab.report.render import Block, Code, Figure, Heading, Para
from llmlab.train.report import loss_figure, training_result, training_table

# The text probe's repeat loss under which the base model copies. Measured on the demo's bases: a
# copying base 0.3-1.5, one whose head did not survive the text 5.0-5.3 beside a first-list loss of
# ~5.6 (docs/speedrun.md, "Phase changes, checked").
COPIES_TEXT = 2.5
DOCS = 'docs/speedrun.md, "Phase changes, checked"'


class CopyingHeadMissing(UserError):
    """The base model does not copy from its context, and the recipe's later stages need it."""


def copying_check(phase: dict | None, probe: dict) -> dict:
    """{"formed", "formed_at", "copies", "ok", "summary"} from the induction phase's record (None: the
    recipe has no induction phase) and the text probe (`induction_score`)."""
    copies = probe["repeat"] < COPIES_TEXT
    if not phase:
        return {"formed": None, "formed_at": None, "copies": copies, "ok": True, "summary": ""}
    formed, at = bool(phase.get("formed")), phase.get("ended_at")
    if not formed:
        h = phase["checks"][-1][1] if phase.get("checks") else float("nan")
        why = (
            f"the copying head did not form in {at} induction steps: held-out repeat loss {h:.2f}, "
            f"goal < {phase['goal']}"
        )
    elif not copies:
        why = (
            f"the copying head formed at step {at} but the base model does not copy text: repeat loss "
            f"{probe['repeat']:.2f} on held-out words (first copy {probe['first']:.2f}), goal < {COPIES_TEXT}"
        )
    else:
        why = ""
    summary = f"copying head formed at step {at}, repeat {probe['repeat']:.2f} (first {probe['first']:.2f})"
    return {"formed": formed, "formed_at": at, "copies": copies, "ok": not why, "summary": why or summary}


def raise_if_no_copy(check: dict, model_dir) -> None:
    """Stop the run with the check's one line when the base model does not copy."""
    if not check["ok"]:
        raise CopyingHeadMissing(
            f"{check['summary']}; every later target copies, so the run stops here (model in "
            f"{model_dir}). Try another --seed or a larger data.induction_steps; see {DOCS}"
        )


def run(ctx: StageContext) -> dict:
    from llmlab.train.pretrain import pretrain

    recipe = copy.deepcopy(ctx.recipe)
    recipe.data.tokenizer = str(ctx.output("tokenizer").resolve())
    out = ctx.dir("pretrain")
    res = training_result(ctx, out, pretrain(recipe, out, resume=ctx.resume, verbose=ctx.verbose))
    res["induction"] = _induction(out)
    res["copying"] = check = copying_check(res.get("induction_phase"), res["induction"])
    raise_if_no_copy(check, out)
    res["induction_steps"] = (res.get("induction_phase") or {}).get("ended_at") or 0
    res["summary"] = (
        (f"{check['summary']}; " if check["formed"] is not None else "")
        + f"val loss {fmt.num(res.get('val_loss'))}, {fmt.num(res.get('val_bpb'))} bpb, "
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
    phase = r.get("induction_phase")
    if phase:
        every = phase.get("every") or 0
        rehearsal = f", with an induction step every {every} steps as a rehearsal" if every else ""
        blocks.append(
            Para(
                "The run started on induction rows (llmlab.data.induction: short rows of repeated random "
                "spans, where a copying head forms), so the first steps' loss is on the random ids a copy "
                "predicts, not text. Every 25 steps the stage measured that loss on held-out rows, and "
                f"switched to the corpus when it fell below {phase['goal']:g}"
                + (f" (step {phase['ended_at']})" if phase.get("formed") else "; it never did")
                + f"{rehearsal}. On the final model it is {fmt.num(phase.get('final'))}."
            )
        )
        png = plot_phase_signal(
            phase.get("checks") or [],
            ctx.fig_dir / "induction_phase.png",
            phase["goal"],
            phase.get("ended_at") if phase.get("formed") else None,
            "repeat loss (nats/token)",
            "the copying head: held-out induction rows",
        )
        if png:
            blocks.append(Figure(png, "held-out repeat loss on induction rows through pretraining"))
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
