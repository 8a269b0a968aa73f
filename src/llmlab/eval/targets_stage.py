"""The demo's targets: what the tools and retrieval add, with and without, in one table.

Every evaluation stage may return `targets`: `{name: {"without": x, "with": y}}` (fractions, None where
a side does not apply). This stage gathers them from the results it finds (it knows no stage's
internals), sets them beside the goals below and draws the bars; the speedrun also writes them to
summary.json under "targets".
"""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report.plots import plot_grouped_bars
from llmlab.report.render import Block, Figure, Heading, Para, Table

# name: (what is measured, the goal for "with", the most "without" may be)
GOALS: dict[str, tuple[str, float, float | None]] = {
    "arithmetic_tool": ("held-out 2-3 digit ×, ÷ and two-step arithmetic, with the calculator", 0.9, 0.1),
    "unseen_facts": ("questions about held-out invented entities, with the top source (cited)", 0.8, None),
    "unseen_facts_citations": ("answers from the top 3 sources citing one that holds the answer", 0.8, None),
    "copy": ("spell, reverse and repeat held-out invented words", 0.6, None),
    "agent": ("look a year up with search, then compute with the calculator", 0.6, None),
}


def gather_targets(results: dict[str, dict]) -> dict[str, dict]:
    """The `targets` entries of every stage result, merged (later stages win on a clash)."""
    out: dict[str, dict] = {}
    for r in results.values():
        out.update(r.get("targets") or {})
    return out


def met(name: str, t: dict) -> bool | None:
    """Whether a target is met (None: no goal known, or not measured)."""
    if name not in GOALS or t.get("with") is None:
        return None
    _, goal, most_without = GOALS[name]
    without_ok = most_without is None or t.get("without") is None or t["without"] <= most_without
    return t["with"] >= goal and without_ok


def run(ctx: StageContext) -> dict:
    targets = gather_targets(ctx.results)
    n_met = sum(bool(met(k, v)) for k, v in targets.items())
    return {
        "targets": targets,
        "met": {k: met(k, v) for k, v in targets.items()},
        "summary": f"{n_met} of {len(targets)} targets met" if targets else "no target measured",
    }


def section(r: dict, ctx) -> list[Block]:
    targets = r.get("targets", {})
    if not targets:
        return [Heading("What tools and retrieval add"), Para("No evaluation in this run reported a target.")]
    rows = []
    for k, t in targets.items():
        what, goal, most = GOALS.get(k, (k, None, None))
        goal_text = (
            "-" if goal is None else f"≥ {goal:.0%}" + (f", without ≤ {most:.0%}" if most is not None else "")
        )
        ok = met(k, t)
        rows.append(
            [
                what,
                _cell(t.get("without")),
                _cell(t.get("with")),
                goal_text,
                "-" if ok is None else ("yes" if ok else "no"),
            ]
        )
    blocks: list[Block] = [
        Heading("What tools and retrieval add"),
        Para(
            "Held-out questions the SFT model answers alone (without) and with what it is given (with): "
            "the calculator, retrieved sources, search + calculator. Every held-out operand pair, entity "
            "and word is absent from all training data (tested)."
        ),
        Table(["task", "without", "with", "goal", "met"], rows),
    ]
    bars = [(k, t.get("without"), t.get("with")) for k, t in targets.items() if t.get("with") is not None]
    goals = {k: GOALS[k][1] for k in targets if k in GOALS}
    png = plot_grouped_bars(
        bars,
        ctx.fig_dir / "targets.png",
        ("without", "with tools / retrieval"),
        marks=goals,
        title="held-out accuracy",
        marks_label="goal",
    )
    if png:
        blocks.append(
            Figure(png, "held-out accuracy without and with the tools and retrieval (dotted: goal)")
        )
    return blocks


def _cell(x):
    return "-" if x is None else x


def headline(r: dict, results: dict) -> list[list]:
    return [
        [
            "demo targets met",
            r.get("summary", "-"),
            ", ".join(k for k, v in r.get("met", {}).items() if v) or "-",
        ]
    ]


TARGETS = Stage(
    "targets",
    "the demo's targets: held-out accuracy with and without tools and retrieval",
    run,
    section=section,
    headline=headline,
    uses=("tool_eval", "rag_eval", "copy_eval", "agent_eval"),
)
