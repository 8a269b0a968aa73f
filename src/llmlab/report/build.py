"""The speedrun's report card: `report.md` and a self-contained `report.html` from the stage dicts.

    Summary     one screen: each stage's headline numbers beside what they compare with
    Stages      status, wall time, training tokens and FLOPs of every stage
    one section per stage (each stage brings its own, `Stage.section`), then the machine and the recipe

Stages without a section get a table of their scalar numbers, so a new stage shows up at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.io import atomic_write_text
from llmlab.report import fmt
from llmlab.report.render import Block, Code, Heading, Para, Table, render_html, render_markdown

TITLE = "llmlab speedrun report"


@dataclass
class ReportContext:
    """What a stage's section sees besides its own stage dict."""

    out: Path  # the run folder
    fig_dir: Path  # where its PNGs go
    results: dict[str, dict]  # every stage's dict

    def path(self, rel: str) -> Path:
        return self.out / rel


def generic_section(name: str, r: dict) -> list[Block]:
    """For a stage without a section: its scalar numbers as a table."""
    skip = {"outputs", "fingerprint", "run_id", "stage", "finished_at", "summary"}
    rows = [[k, v] for k, v in r.items() if k not in skip and isinstance(v, int | float | str | bool)]
    return [Heading(name), Table(["key", "value"], rows)]


def summary_blocks(stages: list, rows: list[dict], results: dict[str, dict]) -> list[Block]:
    """The one-screen summary: every finished stage's headline rows [quantity, value, compared with]."""
    body = []
    for stage, row in zip(stages, rows):
        res = results.get(stage.name)
        if res is None or row["status"] not in ("ran", "cached"):
            continue
        lines = stage.headline(res, results) if stage.headline else [[row.get("summary", ""), "", ""]]
        body += [[stage.name, *line] for line in lines]
    return [Heading("Summary"), Table(["stage", "result", "value", "compared with"], body)]


def stage_table(rows: list[dict], results: dict[str, dict]) -> Table:
    """One row per stage (status, wall time, training tokens and FLOPs, key numbers) and a total."""
    body, wall, tokens, flops = [], 0.0, 0, 0.0
    for i, r in enumerate(rows):
        res = results.get(r["stage"], {})
        t, f = res.get("tokens"), res.get("flops")
        if r["status"] in ("ran", "cached"):
            wall += r.get("wall_s") or 0.0
            tokens += t if isinstance(t, int) else 0
            flops += f if isinstance(f, int | float) else 0.0
        body.append(
            [
                i + 1,
                r["stage"],
                r["status"],
                fmt.seconds(r.get("wall_s")),
                fmt.count(t) if t else "-",
                fmt.sci(f) if f else "-",
                r.get("summary", ""),
            ]
        )
    body.append(["", "total", "", fmt.seconds(wall), fmt.count(tokens), fmt.sci(flops), ""])
    return Table(
        ["#", "stage", "status", "wall time", "training tokens", "training FLOPs", "key numbers"], body
    )


def build_report(
    out: Path,
    stages: list,
    rows: list[dict],
    results: dict[str, dict],
    machine: dict,
    recipe: dict | None = None,
) -> list[Block]:
    """Every block of the report; `stages` and `rows` are in the same order."""
    fig_dir = out / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(out=out, fig_dir=fig_dir, results=results)
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Para(f"Run folder {out} · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
        *summary_blocks(stages, rows, results),
        Heading("Stages"),
        Para(
            "Wall time of each stage when it ran (a cached stage shows its original time); tokens and "
            "FLOPs are those spent training (6N per token plus attention, forward and backward)."
        ),
        stage_table(rows, results),
    ]
    for stage, row in zip(stages, rows):
        res = results.get(row["stage"])
        if res is not None:
            blocks += stage.section(res, ctx) if stage.section else generic_section(stage.name, res)
    blocks += [Heading("Machine"), Table(["key", "value"], [[k, v] for k, v in machine.items()])]
    if recipe:
        from llmlab.io import dump_toml

        blocks += [
            Heading("Recipe"),
            Para(
                f"The resolved recipe, also in {out / 'recipe.toml'}; rerun (reusing every valid stage) "
                f"with: llmlab speedrun --recipe {out / 'recipe.toml'} --out {out}"
            ),
            Code(dump_toml(recipe)),
        ]
    return blocks


def write_report(
    out: str | os.PathLike,
    stages: list,
    rows: list[dict],
    results: dict[str, dict],
    machine: dict,
    recipe: dict | None = None,
) -> tuple[Path, Path]:
    """Write `<out>/report.md` and `<out>/report.html` (PNGs under `<out>/report/`); return both paths."""
    out = Path(out)
    blocks = build_report(out, stages, rows, results, machine, recipe)
    md, page = out / "report.md", out / "report.html"
    atomic_write_text(md, render_markdown(blocks, base=out))
    atomic_write_text(page, render_html(blocks, title=TITLE))
    return md, page
