"""`llmlab sft`: supervised fine-tuning of a base model on chat data (assistant-only loss)."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """data formats (JSONL, one object per line):
  {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
  {"prompt": "...", "completion": "..."}
  {"instruction": "...", "input": "...", "output": "..."}          (Alpaca)
  builtin:mix, builtin:arithmetic, ...                             (generated synthetic tasks)

settings ([sft] recipe section, each overridable with --set sft.KEY=VALUE):
  data, steps (0 = from epochs), epochs, batch_size, lr, min_lr, warmup, schedule, weight_decay,
  pack (pack conversations into rows with document-masked attention), row_len, micro_batches (a step's
  rows sorted by length and cut into this many, each padded to its own longest: the same gradient with
  less padding), truncate
  (warn | drop | error for conversations longer than the context), val_fraction, eval_every, seed.
  device, dtype, grad_clip, compile and log_every come from [train].

examples:
  llmlab sft --model runs/base --data builtin:mix --out runs/sft
  llmlab sft --model runs/base --data my_chats.jsonl --out runs/mine --set sft.epochs=2 --set sft.lr=5e-4
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="fine-tune a base model on instruction data (loss on assistant tokens only)",
        description="Continue training a base model on (instruction, response) conversations rendered with the "
        "chat template; the loss counts only what the assistant says. Writes a model directory with its chat "
        "template (generation.json), which `llmlab chat` and `llmlab generate` use automatically.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="base model directory (from `llmlab pretrain`)"
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE|builtin:NAME",
        help="SFT data: a .jsonl file, a folder of them, or builtin:NAME (default: the recipe's sft.data, "
        "builtin:mix)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument(
        "--recipe", default=None, metavar="FILE", help="TOML recipe whose [sft] and [train] sections apply"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set sft.lr=5e-4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/train_state.pt")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.config import load_recipe
    from llmlab.train.sft import sft

    recipe = load_recipe(args.recipe, args.overrides)
    summary = sft(recipe, args.model, args.out, data=args.data, resume=args.resume)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(
            f"sft: val loss {summary['base_val_loss']:.4f} → {summary['val_loss']:.4f} on held-out assistant "
            f"tokens; {summary['steps']} steps in {summary['wall_s']:.0f}s; model in {args.out}",
            file=sys.stderr,
        )
    return 0
