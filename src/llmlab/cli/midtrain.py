"""`llmlab midtrain`: the step between pretraining and SFT, on generated conversations."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """what it trains on (llmlab.data.midtrain; every conversation on new content):
  tool_use   calculator calls for 2-3 digit arithmetic      grounded  questions answered from numbered sources
  copying    spell / reverse / repeat invented words            agent     search, then compute with the result

settings ([midtrain] recipe section, each overridable with --set midtrain.KEY=VALUE):
  conversations (how many to generate), tool_use / grounded / copying / agent (the families' weights),
  questions (questions per tool-use, grounded or copying conversation), copy_tasks and grounded_questions
  (per copying / grounded conversation instead; 0 = questions), and SFT's keys: steps, epochs, batch_size, lr,
  min_lr, warmup, schedule, weight_decay, pack, row_len, micro_batches, truncate, val_fraction, eval_every, seed.
  device, dtype, grad_clip, compile and log_every come from [train].

examples:
  llmlab midtrain --model runs/base --out runs/mid --set midtrain.steps=1500
  llmlab sft --model runs/mid --out runs/sft
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "midtrain",
        help="teach a base model the chat formats, tool calls and copying (before SFT)",
        description="Continue training a base model on many generated conversations in the chat template (tool "
        "calls, grounded answers with citations, copying, agent transcripts), with SFT's loss on assistant "
        "tokens. Writes a model directory that `llmlab sft` takes as its --model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="base model directory (from `llmlab pretrain`)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument(
        "--data", default=None, metavar="FILE|builtin:NAME", help="other data instead of builtin:midtrain"
    )
    p.add_argument(
        "--recipe", default=None, metavar="FILE", help="TOML recipe whose [midtrain] and [train] apply"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set midtrain.steps=1500 (repeatable)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from DIR/train_state.pt")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.config import load_recipe
    from llmlab.train.sft import sft

    recipe = load_recipe(args.recipe, args.overrides)
    summary = sft(recipe, args.model, args.out, data=args.data, resume=args.resume, section="midtrain")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(
            f"midtrain: val loss {summary['base_val_loss']:.4f} → {summary['val_loss']:.4f} on held-out assistant "
            f"tokens; {summary['steps']} steps in {summary['wall_s']:.0f}s; model in {args.out}",
            file=sys.stderr,
        )
    return 0
