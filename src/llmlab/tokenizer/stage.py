"""The speedrun's tokenizer stage: train the BPE tokenizer (or take the recipe's) and measure its
compression against GPT-2's on held-out text; its report section."""

from __future__ import annotations

import math

from llmlab.errors import UserError
from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Heading, Para, Table


def compression_sample(docs: list[str], max_bytes: int) -> str:
    """Up to `max_bytes` of text for compression stats: every k-th document so the sample spans the corpus."""
    total = sum(len(d.encode("utf-8")) for d in docs)
    step = max(1, math.ceil(total / max_bytes)) if max_bytes > 0 else 1
    picked, size = [], 0
    for d in docs[::step]:
        picked.append(d)
        size += len(d.encode("utf-8"))
        if size >= max_bytes:
            break
    return "\n".join(picked)


def run(ctx: StageContext) -> dict:
    """Train on the training documents (pretraining's split) and report bytes per token (higher is
    better: fewer tokens for the same text) on the held-out documents, beside GPT-2's r50k_base."""
    from llmlab.data.corpus import fetch, load_documents
    from llmlab.data.shards import split_documents
    from llmlab.tokenizer import Tokenizer

    d = ctx.recipe.data
    out = ctx.dir("tokenizer") / "tokenizer.json"
    train_docs, val_docs = split_documents(load_documents(d.source), d.val_fraction)
    extra = []
    if d.tokenizer_sample and not d.tokenizer:  # the chat/tool formats' text, so JSON and numbers get merges
        from llmlab.data.midtrain import sample_text

        extra = sample_text(d.tokenizer_sample)
    tok = (
        Tokenizer.load(d.tokenizer)
        if d.tokenizer
        else Tokenizer.train([*train_docs, *extra], d.vocab_size, pattern=d.pattern)
    )
    tok.save(out)
    text = compression_sample(val_docs or train_docs, ctx.recipe.speedrun.compression_bytes)
    n_bytes = len(text.encode("utf-8"))
    ours = n_bytes / max(1, len(tok.encode_ordinary(text)))
    result = {
        "trained": not d.tokenizer,
        "vocab_size": tok.vocab_size,
        "pattern": d.pattern,
        "n_merges": len(tok.merges),
        "sample": "held-out documents" if val_docs else "training documents",
        "sample_bytes": n_bytes,
        "bytes_per_token": ours,
        "gpt2_bytes_per_token": None,
        "gpt2_vocab_size": None,
        "outputs": [ctx.rel(out)],
    }
    try:
        gpt2 = Tokenizer.load(fetch("gpt2-ranks"), pattern="gpt2")
        result["gpt2_bytes_per_token"] = n_bytes / max(1, len(gpt2.encode_ordinary(text)))
        result["gpt2_vocab_size"] = gpt2.vocab_size
    except UserError as e:  # offline and not cached: report ours alone
        result["gpt2_note"] = str(e)
    gpt2_note = f" (GPT-2: {result['gpt2_bytes_per_token']:.2f})" if result["gpt2_bytes_per_token"] else ""
    result["summary"] = f"vocab {tok.vocab_size}, {ours:.2f} bytes/token on held-out text{gpt2_note}"
    return result


def section(r: dict, ctx) -> list[Block]:
    ours, gpt2 = r.get("bytes_per_token"), r.get("gpt2_bytes_per_token")
    name = "ours (trained here)" if r.get("trained") else "ours (from recipe)"
    rows = [[name, fmt.count(r.get("vocab_size")), r.get("pattern"), ours]]
    if gpt2:
        rows.append(["GPT-2 (r50k_base)", fmt.count(r.get("gpt2_vocab_size")), "gpt2", gpt2])
    origin = "trained on the training documents" if r.get("trained") else "loaded from data.tokenizer"
    blocks: list[Block] = [
        Heading("Tokenizer"),
        Para(
            f"Byte-level BPE, {fmt.count(r.get('n_merges'))} merges, {origin}. Compression is bytes per "
            f"token on {fmt.count(r.get('sample_bytes'))} bytes of {r.get('sample', 'the corpus')} "
            "(higher = fewer tokens for the same text)."
        ),
        Table(["tokenizer", "vocab", "split pattern", "bytes/token"], rows),
    ]
    if gpt2 and ours:
        share = r.get("vocab_size", 0) / (r.get("gpt2_vocab_size") or 1)
        blocks.append(
            Para(
                f"Ours reaches {ours / gpt2:.2f}× GPT-2's compression on this corpus with {share:.1%} of its vocabulary."
            )
        )
    elif r.get("gpt2_note"):
        blocks.append(Para(f"GPT-2 comparison skipped: {r['gpt2_note']}"))
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    gpt2 = r.get("gpt2_bytes_per_token")
    return [
        [
            "compression (bytes/token, held out)",
            fmt.num(r.get("bytes_per_token"), ".2f"),
            f"GPT-2 {gpt2:.2f} with {fmt.count(r.get('gpt2_vocab_size'))} tokens" if gpt2 else "-",
        ]
    ]


TOKENIZER = Stage(
    "tokenizer",
    "train the BPE tokenizer, compression vs GPT-2",
    run,
    section=section,
    headline=headline,
    reads=(
        "data.source",
        "data.tokenizer",
        "data.vocab_size",
        "data.pattern",
        "data.tokenizer_sample",
        "data.val_fraction",
        "speedrun.compression_bytes",
    ),
    files=("data.source", "data.tokenizer"),
    needs=("data",),
)
