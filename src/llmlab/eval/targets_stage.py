"""The demo's targets: what the tools and retrieval add, with and without, in one table.

Every evaluation stage may return `targets`: `{name: {"without": x, "with": y, "signals": {...}}}`
(fractions, None where a side does not apply; `signals` optional: the measurements that tell which
step of the skill failed, e.g. the share of calculator calls that are right). This stage gathers them
from the results it finds (it knows no stage's internals), sets them beside the goals below and
draws the bars; a missed target is named with the phase change it needs, its signals and where to
read more. The speedrun also writes them to summary.json under "targets".
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


# name: (the phase change of midtraining the target needs, where to read about it)
PHASES: dict[str, tuple[str, str]] = {
    "arithmetic_tool": ("copying the question's operands into the calculator call", "docs/tools.md"),
    "unseen_facts": ("the grounded lookup: the fact after the question's name in the source", "docs/rag.md"),
    "unseen_facts_citations": ("citing the source that holds the answer", "docs/rag.md"),
    "copy": ("each kind of copy (spell, reverse, repeat) forms on its own", "docs/sft.md"),
    "agent": ("search, then a calculator call on the found year", "docs/agents.md"),
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


def miss_note(name: str, t: dict) -> str:
    """One line on a missed target: its number, the phase it needs, its signals, where to look."""
    phase, where = PHASES.get(name, ("", "docs/speedrun.md"))
    signals = ", ".join(f"{k} {_num(v)}" for k, v in (t.get("signals") or {}).items())
    with_ = _num(t.get("with"))
    return (
        f"{name} {with_}"
        + (f" ({signals})" if signals else "")
        + (f": {phase}; see {where}" if phase else "")
    )


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def run(ctx: StageContext) -> dict:
    targets = gather_targets(ctx.results)
    judged = {k: met(k, v) for k, v in targets.items()}
    n_met = sum(bool(v) for v in judged.values())
    misses = [miss_note(k, targets[k]) for k, ok in judged.items() if ok is False]
    summary = f"{n_met} of {len(targets)} targets met" if targets else "no target measured"
    return {
        "targets": targets,
        "met": judged,
        "misses": misses,
        "summary": summary + ("; missed " + " | ".join(misses) if misses else ""),
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
    if r.get("misses"):
        blocks.append(
            Para(
                "Missed, with the phase change each needs and the signals that say which step failed: "
                + "; ".join(r["misses"])
                + "."
            )
        )
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
