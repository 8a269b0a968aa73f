"""`llmlab tokenizer train|encode|decode|stats`: byte-level BPE from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator

from llmlab.cli.argtypes import positive_int

PATTERN_HELP = "split pattern: gpt4 (default for training), gpt2, digits (gpt4 with one token per digit), or a custom regex"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer; encode, decode, measure it",
        description="Byte-level BPE (GPT-2/GPT-4 style): text is split by a regex, each chunk's bytes "
        "are merged pair by pair, most frequent pair first. Encoding runs on tiktoken.",
    )
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="<subcommand>", parser_class=type(p))

    t = tsub.add_parser(
        "train",
        help="learn merges from text and write a tokenizer file",
        description="Learn vocab_size - 256 - n_specials merges (ties: smallest pair of ids) and write our "
        "one-file JSON tokenizer. Special tokens get the last ids. Uses rustbpe when installed.",
    )
    t.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help='text: .txt files, .jsonl ({"text": ...} per line), folders, or `shakespeare`',
    )
    t.add_argument(
        "--vocab-size",
        type=positive_int,
        required=True,
        metavar="N",
        help="total vocabulary: 256 bytes + merges + special tokens",
    )
    t.add_argument("--out", required=True, metavar="FILE", help="tokenizer file to write (JSON)")
    t.add_argument("--pattern", default="gpt4", help=PATTERN_HELP)
    t.add_argument(
        "--special",
        nargs="+",
        default=[],
        metavar="TOKEN",
        help="extra special tokens, added after the default ones (<|bos|>, <|user|>, <|end|>, ...)",
    )
    t.add_argument(
        "--no-default-specials",
        action="store_true",
        help="only the --special tokens (the chat stages need the defaults)",
    )
    t.add_argument(
        "--engine",
        choices=["auto", "python"],
        default="auto",
        help="auto: rustbpe when installed (same merges, faster); python: the pure-Python trainer",
    )
    t.add_argument("--json", action="store_true", help="print a JSON summary")
    t.set_defaults(func=run_train)

    e = tsub.add_parser(
        "encode",
        help="text -> token ids (a JSON list)",
        description="Encode --text (or stdin) and print the ids as a JSON list.",
    )
    _add_tokenizer_args(e)
    e.add_argument("--text", help="text to encode (default: read stdin)")
    e.add_argument(
        "--allow-special",
        action="store_true",
        help="turn special-token text like <|end|> into its id (otherwise it is an error)",
    )
    e.set_defaults(func=run_encode)

    d = tsub.add_parser(
        "decode",
        help="token ids (JSON list) -> text",
        description="Decode a JSON list of ids (--ids, or stdin) and print the text.",
    )
    _add_tokenizer_args(d)
    d.add_argument("--ids", help="JSON list of ids, e.g. '[72, 105]' (default: read stdin)")
    d.set_defaults(func=run_decode)

    s = tsub.add_parser(
        "stats",
        help="compression: bytes per token on some text (and GPT-2's, when its ranks are cached)",
        description="Encode the input and report UTF-8 bytes per token (higher = better compression). "
        "GPT-2's figure is shown for comparison when `llmlab data fetch gpt2-ranks` has been run.",
    )
    _add_tokenizer_args(s)
    s.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="files, folders or `shakespeare`"
    )
    s.add_argument("--json", action="store_true", help="print the numbers as JSON")
    s.set_defaults(func=run_stats)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="FILE",
        help="tokenizer file: our JSON, or a tiktoken .tiktoken ranks file (then give --pattern)",
    )
    p.add_argument("--pattern", default=None, help=PATTERN_HELP + "; needed for .tiktoken files")


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show library warnings (e.g. undecodable bytes in a file) as one `llmlab: warning:` line."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"llmlab: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _load(args: argparse.Namespace):
    from llmlab.tokenizer import Tokenizer

    return Tokenizer.load(args.tokenizer, pattern=args.pattern)


def run_train(args: argparse.Namespace) -> int:
    from llmlab.data.corpus import load_documents
    from llmlab.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer

    specials = ([] if args.no_default_specials else list(DEFAULT_SPECIAL_TOKENS)) + [
        s for s in args.special if s not in DEFAULT_SPECIAL_TOKENS or args.no_default_specials
    ]
    with _one_line_warnings():
        docs = load_documents(list(args.input))
        t0 = time.perf_counter()
        tok = Tokenizer.train(
            docs, args.vocab_size, pattern=args.pattern, special_tokens=specials, engine=args.engine
        )
        seconds = time.perf_counter() - t0
    tok.save(args.out)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    summary = {
        "out": args.out,
        "vocab_size": tok.vocab_size,
        "merges": len(tok.merges),
        "special_tokens": len(tok.special_tokens),
        "documents": len(docs),
        "bytes": n_bytes,
        "seconds": round(seconds, 3),
        "fingerprint": tok.fingerprint,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"trained {tok.vocab_size} tokens ({len(tok.merges)} merges + {len(tok.special_tokens)} special) "
            f"on {len(docs)} documents, {n_bytes / 1e6:.2f} MB, in {seconds:.1f} s -> {args.out}"
        )
    return 0


def run_encode(args: argparse.Namespace) -> int:
    tok = _load(args)
    text = args.text if args.text is not None else sys.stdin.read()
    ids = tok.encode(text, allowed_special="all" if args.allow_special else ())
    print(json.dumps(ids))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from llmlab.errors import UserError

    tok = _load(args)
    raw = args.ids if args.ids is not None else sys.stdin.read()
    try:
        ids = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"--ids: not JSON ({e.msg}); give a list of integers like '[72, 105]'") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UserError("--ids: expected a JSON list of integers like '[72, 105]'")
    sys.stdout.write(tok.decode(ids))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from llmlab.data.corpus import builtin_path, is_fetched, load_documents
    from llmlab.tokenizer import Tokenizer

    tok = _load(args)
    with _one_line_warnings():
        docs = load_documents(list(args.input))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    n_tokens = sum(len(ids) for ids in tok.encode_batch(docs, allowed_special="all"))
    result = {
        "tokenizer": args.tokenizer,
        "vocab_size": tok.vocab_size,
        "documents": len(docs),
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / max(n_tokens, 1),
    }
    if is_fetched("gpt2-ranks"):
        gpt2 = Tokenizer.load(builtin_path("gpt2-ranks"), pattern="gpt2")
        gpt2_tokens = sum(len(ids) for ids in gpt2.encode_batch(docs))
        result["gpt2_tokens"] = gpt2_tokens
        result["gpt2_bytes_per_token"] = n_bytes / max(gpt2_tokens, 1)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{n_bytes:,} bytes -> {n_tokens:,} tokens: {result['bytes_per_token']:.3f} bytes/token "
        f"(vocab {tok.vocab_size:,})"
    )
    if "gpt2_tokens" in result:
        print(
            f"GPT-2 (vocab 50,257) on the same text: {result['gpt2_tokens']:,} tokens: "
            f"{result['gpt2_bytes_per_token']:.3f} bytes/token"
        )
    else:
        print("(run `llmlab data fetch gpt2-ranks` to compare with GPT-2)")
    return 0
