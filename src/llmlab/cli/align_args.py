"""Arguments the alignment commands (reward, dpo, rlhf, grpo) share."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser, section: str, data_help: str) -> None:
    p.add_argument(
        "--model", required=True, metavar="DIR", help="the starting chat model (from `llmlab sft`)"
    )
    p.add_argument("--data", default=None, metavar="FILE|builtin:TASK", help=data_help)
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument(
        "--recipe",
        default=None,
        metavar="FILE",
        help=f"TOML recipe whose [{section}] and [train] sections apply",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a recipe key, e.g. --set {section}.lr=1e-4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/train_state.pt")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
