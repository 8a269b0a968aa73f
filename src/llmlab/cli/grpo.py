"""`llmlab grpo`: GRPO with verifiable rewards (k samples per prompt, group-relative advantages)."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.align_args import add_common

EPILOG = """prompts: builtin:arithmetic (questions with answers; held-out accuracy before and after), or a
  JSONL file of {"prompt": "...", "answer": "..."} records.

settings ([grpo] recipe section, --set grpo.KEY=VALUE): rewards (exact, format), k (>= 2 samples per
  prompt), steps, batch_size (prompts per step), max_new_tokens, temperature, lr, loss_type (grpo,
  bnpo, dr_grpo, dapo), scale_rewards (group, batch, none), epsilon, epsilon_high, beta (k3 KL;
  0 = no reference model), iterations, seed.

examples:
  llmlab grpo --model runs/sft --data builtin:arithmetic --out runs/grpo --set grpo.k=8
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grpo",
        help="reinforce what can be checked: GRPO with verifiable rewards",
        description="Sample k completions per prompt with the decoding engine, reward the checkable ones "
        "(an exact answer, a format), and push up the better-than-the-group ones. Writes a model directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(
        p, "grpo", data_help="prompts: builtin:TASK or a .jsonl of {prompt, answer} (default: grpo.prompts)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.align.grpo_train import grpo
    from llmlab.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    s = grpo(recipe, args.model, args.out, prompts=args.data, resume=args.resume)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print(
            f"grpo: held-out accuracy {s['init_accuracy']:.1%} → {s['accuracy']:.1%}; {s['steps']} steps in "
            f"{s['wall_s']:.0f}s; model in {args.out}",
            file=sys.stderr,
        )
    return 0
