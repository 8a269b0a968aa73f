"""`llmlab pretrain`: train a base model on a corpus (next-token cross-entropy)."""

from __future__ import annotations

import argparse
import json
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="train a base model on a corpus (the autoregressive objective)",
        description="Train a decoder-only transformer to predict the next token: minimise "
        "−Σ_t log p(x_t | x_<t) over random windows of the tokenised corpus. Writes a model directory "
        "(config.json, model.safetensors, tokenizer.json, train_state.pt, metrics.jsonl, recipe.toml). "
        "Runs on CPU, one GPU, or many under `torchrun --nproc-per-node N -m llmlab pretrain ...` (DDP, or "
        "FSDP2 with --set train.distributed=fsdp).",
        epilog="Example: llmlab pretrain --recipe recipes/shakespeare-cpu.toml --set train.steps=200 --out runs/demo",
    )
    p.add_argument("--recipe", required=True, metavar="FILE", help="TOML recipe ([data] [model] [train])")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.steps=100 (repeatable)",
    )
    p.add_argument(
        "--out", default="runs/pretrain", metavar="DIR", help="output model directory (default: %(default)s)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/train_state.pt exactly where it stopped (same losses, bit for bit on CPU)",
    )
    p.add_argument("--no-sample", action="store_true", help="skip the sample printed at the end")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.config import load_recipe
    from llmlab.train.pretrain import pretrain

    recipe = load_recipe(args.recipe, args.overrides)
    summary = pretrain(
        recipe, args.out, resume=args.resume, verbose=not args.quiet, sample=not args.no_sample
    )
    if args.json:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in summary.items()
            if isinstance(v, str | int | float | type(None))
        }
        print(json.dumps(clean, indent=2))
    elif "sample" in summary:
        print(summary["sample"])
    return 0
