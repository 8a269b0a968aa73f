"""`llmlab speedrun`: the whole lifecycle in one command, then a report card.

    data → tokenizer → pretrain → base_eval → [scaling] → [midtrain] → sft → chat_eval → tool_eval
         → reward → dpo → rlhf → grpo → aligned_eval → index → rag_eval → copy_eval → agent_eval
         → targets → samples → report

Each stage lives beside the API it drives, with its report section (`llmlab.<part>.*stage*`); this
file only lists them, in order. The runner (`llmlab.pipeline`) caches each stage's result and reruns
what changed; see docs/stages.md to add one.

    from llmlab.config import load_recipe
    from llmlab.speedrun import speedrun
    summary = speedrun(load_recipe("recipes/cpu-demo.toml"), "runs/speedrun")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from llmlab.align.stages import ALIGN_STAGES
from llmlab.config import Recipe, to_dict
from llmlab.data.stage import DATA
from llmlab.eval.copy_eval import COPY_EVAL
from llmlab.eval.icl_stage import BASE_EVAL, CHAT_EVAL
from llmlab.eval.targets_stage import TARGETS, gather_targets
from llmlab.eval.tool_eval import TOOL_EVAL
from llmlab.generate.samples_stage import SAMPLES
from llmlab.io import atomic_write_json, write_toml
from llmlab.pipeline import Stage, StageContext, machine_info, new_row, resolve_stage_names, run_stages, say
from llmlab.scaling.stage import SCALING
from llmlab.systems.agent_eval import AGENT_EVAL
from llmlab.systems.rag.stage import INDEX, RAG_EVAL
from llmlab.tokenizer.stage import TOKENIZER
from llmlab.train.midtrain_stage import MIDTRAIN
from llmlab.train.pretrain_stage import PRETRAIN
from llmlab.train.sft_stage import SFT

STAGES: list[Stage] = [DATA, TOKENIZER, PRETRAIN, BASE_EVAL, SCALING, MIDTRAIN, SFT, CHAT_EVAL, TOOL_EVAL]
STAGES += ALIGN_STAGES  # reward, dpo, rlhf, grpo, aligned_eval ([align] stages = false: off)
STAGES += [INDEX, RAG_EVAL, COPY_EVAL, AGENT_EVAL, TARGETS, SAMPLES]


def speedrun(
    recipe: Recipe,
    out_dir: str | os.PathLike = "runs/speedrun",
    force: list[str] | None = None,
    from_stage: str | None = None,
    stages: list[Stage] | None = None,
    report: bool = True,
    verbose: bool = True,
    echo: Callable[[str], None] = say,
) -> dict:
    """Run every available stage into `out_dir`, reusing valid earlier results.

    `force` reruns the named stages (and, through their new run ids, everything that needs them);
    `from_stage` reruns that stage and every stage after it. Returns {"out", "wall_s", "rows",
    "results", "machine", "report_md", "report_html"}; all but "results" are also saved as
    `<out>/summary.json`. The report is rebuilt at the end of every call, a failed one included.
    """
    import time

    stages = STAGES if stages is None else stages
    force_set = set(resolve_stage_names(force, stages))
    skip = set(resolve_stage_names(recipe.speedrun.skip, stages))
    if from_stage is not None:
        (from_stage,) = resolve_stage_names([from_stage], stages)
        names = [s.name for s in stages]
        force_set |= set(names[names.index(from_stage) :])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_toml(out / "recipe.toml", to_dict(recipe))  # the resolved recipe, to rerun
    ctx = StageContext(recipe=recipe, out=out, verbose=verbose)
    machine = machine_info()
    echo(
        f"llmlab speedrun → {out}  ({machine['device']}, torch {machine['torch']}, {machine['torch_threads']} threads)"
    )
    t0 = time.perf_counter()
    rows: list[dict] = []
    summary: dict = {"out": str(out), "machine": machine, "rows": rows, "results": ctx.results}
    try:
        run_stages(stages, ctx, force=force_set, skip=skip, echo=echo, rows=rows)
    finally:  # also after a failed stage: the report shows what is done
        rows += [new_row(s) for s in stages[len(rows) :]]
        summary["wall_s"] = time.perf_counter() - t0
        summary["targets"] = gather_targets(ctx.results)
        if report:
            from llmlab.report.build import write_report

            md, page = write_report(out, stages, rows, ctx.results, machine, recipe=to_dict(recipe))
            summary["report_md"], summary["report_html"] = str(md), str(page)
            keep = ("out", "wall_s", "machine", "rows", "targets", "report_md", "report_html")
            atomic_write_json(out / "summary.json", {k: summary[k] for k in keep})
    return summary
