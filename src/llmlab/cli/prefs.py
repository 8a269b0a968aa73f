"""`llmlab prefs`: human preference data (from `llmlab serve --preferences FILE`); `stats` for now."""

from __future__ import annotations

import argparse
import json

EPILOG = """The file is what the chat page's compare mode writes (one judgement a line), and what
`llmlab reward --data FILE` and `llmlab dpo --data FILE` train on; see docs/alignment.md.

examples:
  llmlab prefs stats prefs.jsonl
  llmlab prefs stats prefs.jsonl --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prefs",
        help="human preference data: counts, annotator agreement, win rates",
        description="Work with the preference judgements collected by `llmlab serve --preferences`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    stats = actions.add_parser(
        "stats",
        help="counts by label and annotator, agreement (and Cohen's kappa), each model's win rate",
        description="Counts by label (A, B, tie, both bad) and annotator; agreement and Cohen's kappa "
        "on pairs two annotators judged; the win rate of each model.",
    )
    stats.add_argument("file", metavar="FILE", help="a preferences .jsonl")
    stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    stats.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from llmlab.align.prefs_stats import format_stats, preference_stats

    s = preference_stats(args.file)
    print(json.dumps(s, indent=2) if args.json else format_stats(s))
    return 0
