"""`llmlab eval`: in-context-learning accuracy (k-shot) and perplexity of a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmlab.cli.argtypes import nonneg_int, positive_int, shot_list

EPILOG = """tasks: built-in (arithmetic, plurals, opposites, capitals, spelling, reverse, count_letters, format, largest;
`all` = every one) or a JSONL file of your own, one example per line:
  {"context": "...", "choices": ["A", "B", ...], "answer": 0}     multiple choice (answer: index or text)
  {"prompt": "...", "answer": "..."}                               generation, normalised exact match
  add "split": "train" to a line to put it in the few-shot pool instead of the test set.

chat: a model directory with a chat template (generation.json, written by `llmlab sft`) is evaluated
through the template, zero-shot by default; a base model with plain-text k-shot prompts.

examples:
  llmlab eval --model runs/base --task arithmetic --shots 0,1,4,8
  llmlab eval --model runs/sft --task all --json
  llmlab eval --model runs/base --text shakespeare           # perplexity and bits per byte
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure k-shot in-context learning (accuracy vs k) and perplexity / bits per byte",
        description="Evaluate a model from a prompt alone (no gradient step): k worked examples from a task's "
        "train split, then held-out questions; multiple choice by log-likelihood, generation by exact match. "
        "Writes results JSON and an accuracy-vs-k PNG.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="task name, `all`, or a .jsonl task file (repeatable; comma-separated works too)",
    )
    p.add_argument(
        "--shots",
        type=shot_list,
        default=None,
        metavar="K,K,...",
        help="numbers of in-context examples (default 0,1,2,4,8 for base models, 0 for chat models)",
    )
    p.add_argument(
        "--chat",
        choices=["auto", "yes", "no"],
        default="auto",
        help="prompt through the chat template (auto: when the model directory has one)",
    )
    p.add_argument(
        "--mode",
        choices=["mc", "gen"],
        default=None,
        help="force multiple-choice or generation scoring (default: per task)",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="evaluate the first N test examples"
    )
    p.add_argument(
        "--text",
        default=None,
        metavar="SOURCE",
        help="also measure perplexity and bits per byte on SOURCE (a corpus name or path)",
    )
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        default=200_000,
        metavar="N",
        help="tokens of --text to evaluate (default 200000)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for choosing the few-shot examples")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="where eval.json and eval.png go (default MODEL/eval)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.set_defaults(func=run)


def _perplexity_text(source: str) -> list[str]:
    """The documents of --text, read before the model loads so a bad source fails at once."""
    from llmlab.data.corpus import load_documents
    from llmlab.errors import UserError

    docs = load_documents(source)
    if not any(docs):
        raise UserError(f"--text {source}: no text in it; perplexity needs at least one character")
    return docs


def run(args: argparse.Namespace) -> int:
    import torch

    import llmlab
    from llmlab.errors import UserError
    from llmlab.eval import evaluate, perplexity, task_names
    from llmlab.eval.icl_stage import accuracy_by_k
    from llmlab.io import atomic_write_json, read_json
    from llmlab.report.plots import plot_accuracy_by_k

    names = [n.strip() for t in args.task for n in t.split(",") if n.strip()]
    names = [n for t in names for n in (task_names() if t == "all" else [t])]
    if not names and not args.text:
        raise UserError(
            "give at least one --task (or --text for perplexity); see --help for the built-in tasks"
        )
    docs = _perplexity_text(args.text) if args.text else None
    model, tok = llmlab.load(args.model)
    if tok is None:
        raise UserError(f"{args.model}: no tokenizer.json; evaluation needs the model's tokenizer")
    gen_file = Path(args.model) / "generation.json"
    has_template = gen_file.is_file() and bool(read_json(gen_file, "generation config").get("chat_template"))
    chat = {"yes": True, "no": False, "auto": has_template}[args.chat]
    shots = args.shots or ([0] if chat else [0, 1, 2, 4, 8])
    torch.manual_seed(args.seed)

    results: dict = {"model": str(args.model), "chat": chat, "tasks": {}}
    for name in names:
        r = evaluate(
            model, tok, name, shots=shots, chat=chat, limit=args.limit, seed=args.seed, kind=args.mode
        )
        results["tasks"][r["task"]] = r
        if not args.json:
            accs = "  ".join(f"k={k}: {a:.1%}" for k, a in zip(r["shots"], r["acc"]))
            held = f"  (held out: {r['heldout']})" if r.get("heldout") else ""
            print(f"{r['task']:<14} {r['kind']:<4} n={r['n']:<4} {accs}{held}", file=sys.stderr)
    if docs is not None:
        results["perplexity"] = perplexity(model, tok, docs, max_tokens=args.max_tokens)
        if not args.json:
            p = results["perplexity"]
            print(
                f"perplexity on {args.text}: loss {p['loss']:.4f}  ppl {p['ppl']:.2f}  bpb {p['bpb']:.4f} "
                f"({p['tokens']:,} tokens)",
                file=sys.stderr,
            )

    out = Path(args.out) if args.out else Path(args.model) / "eval"
    atomic_write_json(out / "eval.json", results)
    if results["tasks"]:
        tasks = results["tasks"]
        plot_accuracy_by_k(
            {t: accuracy_by_k(r) for t, r in tasks.items()},
            out / "eval.png",
            chance={t: r["chance"] for t, r in tasks.items() if r.get("chance")},
            title=f"{Path(args.model).name}: accuracy vs in-context examples",
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"results in {out / 'eval.json'}" + (f" and {out / 'eval.png'}" if results["tasks"] else ""),
            file=sys.stderr,
        )
    return 0
