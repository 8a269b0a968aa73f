"""`llmlab rag index|search|ask|eval`: retrieval-augmented generation over a folder of documents."""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.cli.argtypes import nonneg_int, positive_int

MODES = ("bm25", "dense", "hybrid")
EPILOG = """inputs: .txt, .md, .html, .jsonl ({"id", "text", "title"?} per line), .pdf (with pypdf).
QA file for eval: {"question": "...", "answers": ["..."], "relevant": ["doc id", ...]} per line.

examples:
  llmlab rag index --input docs/ --out runs/index --chunk-tokens 200 --overlap 40 --dense minilm
  llmlab rag index --out runs/index --add docs/new.md --remove old.md
  llmlab rag search --index runs/index --query "Who founded Kelmar?" --k 5 --mode hybrid
  llmlab rag ask --index runs/index --model runs/speedrun/sft --question "Who founded Kelmar?"
  llmlab rag eval --index runs/index --qa qa.jsonl --model runs/speedrun/sft --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rag",
        help="index documents, retrieve (BM25, dense, hybrid) and answer with checked citations",
        description="Retrieval-augmented generation: a persisted index of your documents, hybrid "
        "retrieval, answers that cite numbered sources, and retrieval / answer metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs = p.add_subparsers(dest="rag_command", metavar="<rag command>", parser_class=type(p))
    i = rs.add_parser("index", help="build an index directory, or --add / --remove documents in one")
    i.add_argument("--input", nargs="+", default=[], metavar="PATH", help="files or folders to index")
    i.add_argument("--out", required=True, metavar="DIR", help="the index directory")
    i.add_argument("--chunk-tokens", type=positive_int, default=200, metavar="N", help="tokens per chunk")
    i.add_argument("--overlap", type=nonneg_int, default=40, metavar="N", help="tokens shared by neighbours")
    i.add_argument("--dense", default="minilm", metavar="minilm|MODEL_DIR|none", help="the embedder")
    i.add_argument("--add", nargs="+", default=[], metavar="PATH", help="add or update documents in DIR")
    i.add_argument("--remove", nargs="+", default=[], metavar="ID", help="remove documents by id")
    i.set_defaults(func=run_index)

    s = rs.add_parser("search", help="the top chunks for a query")
    s.add_argument("--index", required=True, metavar="DIR")
    s.add_argument("--query", required=True)
    s.add_argument("--k", type=positive_int, default=5, metavar="N")
    s.add_argument("--mode", choices=MODES, default="hybrid")
    s.add_argument("--json", action="store_true", help="print the hits as JSON")
    s.set_defaults(func=run_search)

    a = rs.add_parser("ask", help="answer a question from the index with a model, citing sources")
    a.add_argument("--index", required=True, metavar="DIR")
    a.add_argument("--model", required=True, metavar="DIR", help="a model directory with a chat template")
    a.add_argument("--question", required=True)
    a.add_argument("--k", type=positive_int, default=4, metavar="N")
    a.add_argument("--mode", choices=MODES, default=None, help="default: hybrid, or bm25 without vectors")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_ask)

    e = rs.add_parser(
        "eval", help="retrieval metrics per mode; with --model, answers with and without retrieval"
    )
    e.add_argument("--index", required=True, metavar="DIR")
    e.add_argument("--qa", required=True, metavar="FILE.jsonl")
    e.add_argument("--model", default=None, metavar="DIR")
    e.add_argument(
        "--mode",
        choices=MODES,
        action="append",
        default=None,
        help="repeatable (default: all the index allows)",
    )
    e.add_argument("--k", type=positive_int, default=3, metavar="N", help="sources per answer")
    e.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="answer the first N questions"
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _warn_lines(fn):
    """Run fn, printing each ingest warning as one line on stderr."""
    import warnings

    from llmlab.systems.rag.ingest import IngestWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IngestWarning)
        try:
            return fn()
        finally:
            for w in caught:
                if issubclass(w.category, IngestWarning):
                    print(f"llmlab: warning: {w.message}", file=sys.stderr)


def run_index(args: argparse.Namespace) -> int:
    from llmlab.errors import UserError
    from llmlab.systems.rag.index import build_index, load_index

    if args.add or args.remove:
        if args.input:
            raise UserError("--input builds a new index; use --add / --remove to update one, not both")
        index = load_index(args.out)
        report = {}
        if args.remove:
            report |= index.remove(args.remove)
        if args.add:
            report |= _warn_lines(lambda: index.add(args.add))
    else:
        if not args.input:
            raise UserError("--input: give at least one file or folder (or --add / --remove with an index)")
        index = _warn_lines(
            lambda: build_index(args.input, args.out, args.chunk_tokens, args.overlap, dense=args.dense)
        )
        report = {"documents": len(index.manifest["documents"])}
    report |= {"chunks": len(index.chunks), "index": str(args.out)}
    print(", ".join(f"{k}: {v}" for k, v in report.items()))
    return 0


def run_search(args: argparse.Namespace) -> int:
    from llmlab.systems.rag.index import load_index

    hits = load_index(args.index).search(args.query, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
    for n, h in enumerate(hits if not args.json else [], start=1):
        print(f"[{n}] {h.score:.4f}  {h.chunk_id}\n    {' '.join(h.text.split())[:300]}")
    return 0


def _load_chat_model(path: str):
    import llmlab
    from llmlab.errors import UserError

    model, tok = llmlab.load(path)
    if tok is None:
        raise UserError(f"--model {path}: no tokenizer.json; answering needs the model's tokenizer")
    return model, tok


def run_ask(args: argparse.Namespace) -> int:
    from llmlab.systems.rag.answering import answer
    from llmlab.systems.rag.index import load_index

    index = load_index(args.index)
    if args.mode:
        index.search(args.question, k=1, mode=args.mode)  # a bad mode fails before the model loads
    model, tok = _load_chat_model(args.model)
    a = answer(model, tok, index, args.question, k=args.k, mode=args.mode)
    if args.json:
        out = {"answer": a.text, "citations": a.citations, "invalid_citations": a.invalid_citations}
        print(json.dumps(out | {"sources": [h.__dict__ for h in a.hits]}, indent=2))
        return 0
    print(a.text)
    for n, h in enumerate(a.hits, start=1):
        print(f"  [{n}] {h.chunk_id}", file=sys.stderr)
    if a.invalid_citations:
        print(
            f"llmlab: warning: cites {a.invalid_citations}, not among the {len(a.hits)} sources given",
            file=sys.stderr,
        )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from llmlab.systems.rag.evaluate import evaluate, read_qa
    from llmlab.systems.rag.index import load_index

    index, qa = load_index(args.index), read_qa(args.qa)
    modes = args.mode or (["hybrid", "bm25", "dense"] if index.has_dense else ["bm25"])
    for m in modes:
        index.search("probe", k=1, mode=m)  # a dense mode on an index without vectors fails here
    model, tok = _load_chat_model(args.model) if args.model else (None, None)
    r = evaluate(index, qa, modes, model, tok, k=args.k, limit=args.limit)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for m, v in r["retrieval"].items():
        print(
            f"{m:<7} "
            + "  ".join(f"{k} {x:.3f}" for k, x in v.items() if k != "queries")
            + f"  (n={v['queries']})"
        )
    if r["answers"]:
        for name in ("with", "without"):
            v = r["answers"][name]
            cells = "  ".join(f"{k} {x:.3f}" for k, x in v.items() if k != "questions" and x is not None)
            print(f"answers {name + ' retrieval':<17} {cells}  (n={v['questions']})")
        for m in r["answers"]["misses"]:
            print(
                f"wrong with retrieval: {m['question']} -> {m['with']!r} (gold: {' | '.join(m['answers'])})"
            )
    return 0
