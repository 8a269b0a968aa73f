"""`llmlab rlhf`: PPO against a reward model, with a per-token KL penalty to the reference."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.align_args import add_common

EPILOG = """prompts: builtin:TASK (its questions) or a JSONL file of {"prompt": ...} records.

settings ([rlhf] recipe section, --set rlhf.KEY=VALUE): reward_model, steps (rollout batches),
  batch_size (prompts per batch), max_new_tokens, temperature, ppo_epochs, minibatches, lr,
  value_lr_scale, kl_coef, kl_estimator (k1, k3), adaptive_kl, target_kl, kl_horizon, gamma, lam,
  cliprange, cliprange_value, vf_coef, missing_eos_penalty, whiten_rewards, seed.

The value model is a separate network initialised from the reward model; it is saved in OUT/value.

examples:
  llmlab rlhf --model runs/sft --reward-model runs/reward --data builtin:arithmetic --out runs/rlhf
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rlhf",
        help="RLHF: optimise a chat model against a reward model with PPO",
        description="Sample responses with the decoding engine, score them with the reward model, penalise "
        "the KL to the reference per token, and update policy and value model with clipped PPO losses.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p, "rlhf", data_help="prompts: builtin:TASK or a .jsonl file (default: rlhf.prompts)")
    p.add_argument(
        "--reward-model", default=None, metavar="DIR", help="reward model directory (from `llmlab reward`)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmlab.align.ppo_train import rlhf
    from llmlab.config import load_recipe
    from llmlab.errors import UserError

    recipe = load_recipe(args.recipe, args.overrides)
    reward_dir = args.reward_model or recipe.rlhf.reward_model
    if not reward_dir:
        raise UserError("rlhf needs a reward model: pass --reward-model DIR or set rlhf.reward_model")
    s = rlhf(recipe, args.model, reward_dir, args.out, prompts=args.data, resume=args.resume)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        h = s["history"]
        print(
            f"rlhf: score {h[0][1]:.3f} → {h[-1][1]:.3f}, KL {h[-1][0]:.3f} nats; {s['steps']} PPO steps in "
            f"{s['wall_s']:.0f}s; model in {args.out}",
            file=sys.stderr,
        )
    return 0
