"""The `llmlab` command line: one subcommand per stage, each in its own small module here.

This file only routes. Each module in `COMMANDS` defines `register(subparsers)`, which adds its
subcommand(s) and sets `func` on the parsed namespace. Handlers import torch and friends lazily so
`llmlab --help` stays instant. Expected errors (`UserError`) become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmlab.errors import UserError

# Module names under llmlab.cli, in the order they appear in `llmlab --help`.
COMMANDS = [
    "data",
    "tokenizer",
    "pretrain",
    "midtrain",
    "sft",
    "reward",
    "dpo",
    "rlhf",
    "grpo",
    "eval",
    "generate",
]
COMMANDS += ["serve", "agent", "rag", "export", "scaling", "speedrun"]
COMMANDS += ["prefs"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 (argparse already exits 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"llmlab {self.prog.split(' ', 1)[-1]}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmlab",
        description="The whole life of a large language model: tokenizer → pretraining → scaling laws → "
        "SFT → evaluation → decoding. Every stage runs on a laptop CPU with tiny models.",
        epilog="Run `llmlab <command> --help` for each command. Start with `llmlab speedrun`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"llmlab.cli.{name}").register(sub)
    return parser


def flush_subnormals() -> None:
    """Start torch's CPU worker threads with subnormal floats (|x| < 1.2e-38) computed as zero.

    x86 does arithmetic on a subnormal in microcode, ~100× slower. Sharp attention makes them (a
    softmax weight e^(s − max) with s − max < −87), so a model that learns to copy slows down as it
    learns (benchmarks/flush_denormal.py). The flag is per thread and a new thread copies its
    creator's, so it is set while the pool starts, then turned off again in this thread: here it
    would change Python's own float comparisons too (with it, `5e-324 > 0` is False). `train()` turns
    it on in this thread for the duration of the training."""
    import torch

    torch.set_flush_denormal(True)
    (torch.ones(1 << 22) * 1.0).sum()  # big enough to start every worker
    torch.set_flush_denormal(False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error, already printed on one line (2)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    flush_subnormals()
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"llmlab: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
