"""`llmlab dpo`: direct preference optimisation (and its family) of a chat model on preference pairs."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.align_args import add_common

EPILOG = """data (JSONL, one object per line; strings or message lists):
  {"prompt": "...", "chosen": "...", "rejected": "..."}
  builtin:arithmetic, ...      pairs from a synthetic task (chosen = answer, rejected = a wrong choice)

settings ([dpo] recipe section, each overridable with --set dpo.KEY=VALUE):
  beta (> 0), loss_type (sigmoid, hinge, ipo, sigmoid_norm, robust, exo_pair, nca_pair, bco_pair,
  sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft), label_smoothing, sft_weight,
  steps (0 = from epochs), epochs, batch_size (pairs), lr, min_lr, warmup, schedule, weight_decay,
  val_fraction, seed, keep_ties (also train on "tie" and "both bad" judgements from the chat page).
  device, dtype, grad_clip and log_every come from [train].

examples:
  llmlab dpo --model runs/sft --data builtin:arithmetic --out runs/dpo
  llmlab dpo --model runs/sft --data prefs.jsonl --out runs/ipo --set dpo.loss_type=ipo --set dpo.beta=0.5
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dpo",
        help="optimise a chat model on preference pairs directly (DPO, IPO, ...)",
        description="Train the policy so that β·log π/π_ref prefers the chosen completion (the reference is "
        "the starting model, frozen; its log-probs are computed once). Writes a model directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p, "dpo", data_help="preference data: a .jsonl file or builtin:TASK (default: dpo.data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.align.dpo_train import dpo
    from llmlab.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    s = dpo(recipe, args.model, args.out, data=args.data, resume=args.resume)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print(
            f"dpo: held-out loss {s['init_val_loss']:.4f} → {s.get('val_loss', float('nan')):.4f}, "
            f"reward accuracy {s.get('val_accuracy', float('nan')):.1%}; {s['steps']} steps in {s['wall_s']:.0f}s; "
            f"model in {args.out}",
            file=sys.stderr,
        )
    return 0
