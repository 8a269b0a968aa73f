"""`llmlab speedrun`: every stage of the lifecycle in one command, then a report card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmlab.cli.argtypes import nonneg_int

if TYPE_CHECKING:
    from llmlab.config import Recipe

DEFAULT_RECIPE = "recipes/cpu-demo.toml"

EXAMPLES = """examples:
  llmlab speedrun                                   # the CPU demo: every stage, ~9-11 min on 2 AVX-512 cores
  llmlab speedrun --recipe recipes/gpu-speedrun.toml --out runs/gpu
  llmlab speedrun --set train.steps=50 --out runs/quick
  llmlab speedrun --seed 3 --out runs/seed-3        # the same recipe on another seed
  llmlab speedrun --force sft                       # redo SFT and what depends on it
  llmlab speedrun --set speedrun.scaling=true       # add the scaling mini-sweep (slow)
"""


def stage_help() -> str:
    """The stage table, from `llmlab.speedrun.STAGES` itself (imported only when help is shown:
    the stage modules pull in torch)."""
    from llmlab.speedrun import STAGES

    lines = [f"  {s.name:<11} {s.title}" for s in STAGES]
    return (
        "stages, in order (each saves <out>/<stage>/stage.json; a stage whose saved output is still valid\n"
        "for the recipe is reused, so an interrupted run continues where it stopped):\n"
        + "\n".join(lines)
        + "\nthen <out>/report.md and a self-contained <out>/report.html.\n\n"
        + EXAMPLES
    )


class _StageHelpFormatter(argparse.RawDescriptionHelpFormatter):
    def add_text(self, text: str | None) -> None:
        super().add_text(stage_help() if text == "{stages}" else text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "speedrun",
        help="run the whole lifecycle (data → tokenizer → pretrain → evals → SFT → samples) and write a report",
        description="Run every available stage of the lifecycle on the recipe's corpus and write "
        "report.md and report.html into the output folder.",
        epilog="{stages}",
        formatter_class=_StageHelpFormatter,
    )
    p.add_argument(
        "--recipe",
        default=None,
        metavar="FILE",
        help=f"TOML recipe ([data] [model] [train] [sft] [speedrun] sections); default {DEFAULT_RECIPE}",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.steps=100 (repeatable)",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=None,
        metavar="N",
        help="the run's seed (= --set speedrun.seed=N): every stage's training seed derives from it "
        "(a stage's own seed key still wins); held-out evaluation sets do not depend on it",
    )
    p.add_argument("--out", default="runs/speedrun", metavar="DIR", help="run folder (default runs/speedrun)")
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun STAGE even if its output is valid (repeatable); stages that need it rerun too",
    )
    p.add_argument(
        "--from",
        dest="from_stage",
        default=None,
        metavar="STAGE",
        help="rerun STAGE and every stage after it",
    )
    p.add_argument("--json", action="store_true", help="print the summary (stage rows, report paths) as JSON")
    p.set_defaults(func=run)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe `llmlab speedrun` runs: --recipe (default DEFAULT_RECIPE), the --set overrides,
    then --seed as the last override (so the stages' seeds derive from it)."""
    from llmlab.config import load_recipe
    from llmlab.errors import UserError

    recipe_path = args.recipe
    if recipe_path is None:
        if not Path(DEFAULT_RECIPE).is_file():
            raise UserError(
                f"{DEFAULT_RECIPE}: no such recipe file (run from the llmlab checkout, or pass --recipe FILE)"
            )
        recipe_path = DEFAULT_RECIPE
    seed = [] if args.seed is None else [f"speedrun.seed={args.seed}"]
    return load_recipe(recipe_path, [*args.overrides, *seed])


def run(args: argparse.Namespace) -> int:
    from llmlab.pipeline import say, summary_table
    from llmlab.speedrun import speedrun

    recipe = recipe_from_args(args)
    echo = (lambda line: None) if args.json else say
    summary = speedrun(recipe, args.out, force=args.force, from_stage=args.from_stage, echo=echo)
    if args.json:
        print(
            json.dumps(
                {
                    "out": summary["out"],
                    "wall_s": summary["wall_s"],
                    "rows": summary["rows"],
                    "report_md": str(summary["report_md"]),
                    "report_html": str(summary["report_html"]),
                },
                indent=2,
            )
        )
        return 0
    print()
    print(summary_table(summary["rows"]))
    print(f"\nreport: {summary['report_md']}\n        {summary['report_html']}")
    return 0
