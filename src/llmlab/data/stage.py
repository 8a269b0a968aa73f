"""The speedrun's data stage: fetch (when built in) and read the corpus; its report section."""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Heading, Table


def source_label(source: str | list[str]) -> str:
    return " + ".join(source) if isinstance(source, list) else str(source)


def run(ctx: StageContext) -> dict:
    """Count the documents and UTF-8 bytes of `data.source`."""
    from llmlab.data.corpus import load_documents

    source = ctx.recipe.data.source
    docs = load_documents(source)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return {
        "source": source_label(source),
        "documents": len(docs),
        "bytes": n_bytes,
        "summary": f"{len(docs)} documents, {n_bytes / 1e6:.2f} MB",
    }


def section(r: dict, ctx) -> list[Block]:
    return [
        Heading("Data"),
        Table(
            ["source", "documents", "bytes"],
            [[r.get("source"), fmt.count(r.get("documents")), fmt.count(r.get("bytes"))]],
        ),
    ]


def headline(r: dict, results: dict) -> list[list]:
    return [
        [
            "corpus",
            f"{fmt.count(r.get('documents'))} documents, {r.get('bytes', 0) / 1e6:.2f} MB",
            r.get("source"),
        ]
    ]


DATA = Stage(
    "data",
    "fetch and read the corpus",
    run,
    section=section,
    headline=headline,
    reads=("data.source",),
    files=("data.source",),
)
