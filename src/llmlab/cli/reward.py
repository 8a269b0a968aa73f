"""`llmlab reward`: fit a Bradley–Terry reward model (SFT trunk + scalar head) on preference pairs."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.align_args import add_common

EPILOG = """data (JSONL, one object per line; strings or message lists; "margin" optional):
  {"prompt": "...", "chosen": "...", "rejected": "...", "margin": 1.0}
  builtin:arithmetic, ...      pairs from a synthetic task

settings ([reward] recipe section, --set reward.KEY=VALUE): steps (0 = from epochs), epochs,
  batch_size (pairs), lr, min_lr, warmup, schedule, weight_decay, margin (use the pairs' margins),
  center_coef, val_fraction, seed, keep_ties (also train on "tie" and "both bad" judgements).

The output directory's config.json says "head": "reward"; `llmlab export hf` writes it as a
LlamaForSequenceClassification directory.

examples:
  llmlab reward --model runs/sft --data builtin:arithmetic --out runs/reward
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reward",
        help="fit a reward model on preference pairs (Bradley–Terry)",
        description="Train r(x, y) = w · h(last token) on the SFT trunk so that σ(r_c − r_r) predicts the "
        "preferences. Writes a model directory with a reward head.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p, "reward", data_help="preference data: a .jsonl file or builtin:TASK (default: reward.data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.align.reward import train_reward
    from llmlab.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    s = train_reward(recipe, args.model, args.out, data=args.data, resume=args.resume)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print(
            f"reward: held-out accuracy {s['init_val_accuracy']:.1%} → {s.get('val_accuracy', float('nan')):.1%}; "
            f"{s['steps']} steps in {s['wall_s']:.0f}s; model in {args.out}",
            file=sys.stderr,
        )
    return 0
