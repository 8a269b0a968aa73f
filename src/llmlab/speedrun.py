"""`llmlab speedrun`: the whole lifecycle in one command, then a report card.

    data → tokenizer → pretrain → base_eval → [scaling] → sft → chat_eval → samples → report

A stage is a small function `fn(run) -> dict`. It reads the recipe and the results of the stages before
it, writes its files under `<out>/<stage>/`, and returns a JSON-able dict of its numbers. When it
completes, the orchestrator adds the wall time and saves the dict atomically as `<out>/<stage>/stage.json`.
On the next call a stage is skipped, and its saved dict reused, when

    stage.json exists  ∧  every path in its "outputs" exists  ∧  its fingerprint matches,

    fingerprint = sha256(stage name, the recipe sections it reads, the run ids of the stages it needs)

so an interrupted run continues where it stopped, a changed `train.steps` reruns pretraining and
everything downstream of it, and a changed `speedrun.chat_prompts` reruns only the samples. Every
completed stage gets a fresh random `run_id`, so forcing a stage (`--force pretrain`) also reruns its
dependants. A stage whose module is not installed yet, or that the recipe turns off, is listed and left out.

The report (`llmlab.eval.report`) is rebuilt from the stage dicts at the end of every call.

    from llmlab.config import load_recipe
    from llmlab.speedrun import speedrun
    summary = speedrun(load_recipe("recipes/cpu-demo.toml"), "runs/speedrun")
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.config import Recipe, dump_toml, to_dict
from llmlab.errors import UserError
from llmlab.io import atomic_write_json, atomic_write_text
from llmlab.io import progress as progress_iter

STAGE_FILE = "stage.json"
ATTEMPT_FILE = "attempt.json"  # written when a stage starts: its fingerprint, for safe resumption
STAGE_FORMAT = 1  # bump when a stage dict's meaning changes, so old runs are recomputed


# ---------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One step of the lifecycle.

    `fn(run)` does the work and returns a JSON-able dict, with "outputs" (paths relative to the run
    folder, or absolute) and optionally "summary" (one short line of key numbers for the progress view).
    `reads` names the recipe sections (or `section.key`s) the result depends on; `needs` names earlier
    stages whose results it must have; `uses` names earlier stages whose results it uses when they
    exist; `requires` names modules that must be importable for the stage to exist at all;
    `enabled(recipe)` lets the recipe turn it off.
    """

    name: str
    title: str
    fn: Callable[[Run], dict]
    reads: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    enabled: Callable[[Recipe], bool] = lambda recipe: True


@dataclass
class Run:
    """What a stage sees: the recipe, the run folder, and the results of the stages before it.

    `resume` is True when the running stage's last attempt had the same fingerprint and did not finish
    (it was interrupted): a training stage may then continue from its checkpoint. With a different
    fingerprint its old checkpoint belongs to other inputs and must not be resumed."""

    recipe: Recipe
    out: Path
    results: dict[str, dict] = field(default_factory=dict)
    verbose: bool = True
    resume: bool = False

    def dir(self, stage: str) -> Path:
        d = self.out / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, rel: str | os.PathLike) -> Path:
        """Resolve a path from a stage dict (relative to the run folder, or absolute)."""
        return self.out / rel

    def rel(self, path: str | os.PathLike) -> str:
        """A path for a stage dict: relative to the run folder when inside it (so the folder can move)."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.out.resolve()))
        except ValueError:
            return str(path)


def _recipe_value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = getattr(node, part, None)  # a section another stage has not added yet reads as None
    return to_dict(node) if dataclasses.is_dataclass(node) else node


def fingerprint(stage: Stage, recipe: Recipe, results: dict[str, dict]) -> str:
    """sha256 over the stage name, the recipe values it reads and the run ids of the stages it needs."""
    payload = {
        "stage": stage.name,
        "format": STAGE_FORMAT,
        "reads": {key: _recipe_value(recipe, key) for key in stage.reads},
        "needs": {name: results.get(name, {}).get("run_id") for name in stage.needs + stage.uses},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_valid(run: Run, stage: Stage, fp: str) -> dict | None:
    """The saved dict of `stage` when its output is valid for fingerprint `fp`, else None."""
    path = run.out / stage.name / STAGE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fp:
        return None
    if not all(run.path(p).exists() for p in saved.get("outputs", [])):
        return None
    return saved


def _read_fingerprint(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def available(stage: Stage) -> bool:
    """Whether the modules a stage calls exist in this install (others may still be writing them)."""
    for mod in stage.requires:
        try:
            if importlib.util.find_spec(mod) is None:
                return False
        except (ModuleNotFoundError, ValueError):
            return False
    return True


def say(line: str) -> None:
    """The default progress printer: one line to stdout, flushed (the stages' bars go to stderr)."""
    print(line, flush=True)


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(round(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


def run_stages(
    stages: list[Stage],
    run: Run,
    force: set[str] | None = None,
    echo: Callable[[str], None] = say,
    rows: list[dict] | None = None,
) -> list[dict]:
    """Run (or reuse) each stage in order; return one status row per stage (appended to `rows`).

    A row is {"stage", "title", "status": ran|cached|off|unavailable|blocked|failed, "wall_s", "summary"}.
    A failing stage prints its row and re-raises; everything completed before it stays saved.
    """
    force = force or set()
    rows = [] if rows is None else rows
    t_start = time.perf_counter()
    active = [s.name for s in stages if s.enabled(run.recipe) and s.name not in run.recipe.speedrun.skip]
    i = 0
    for stage in stages:
        row = {"stage": stage.name, "title": stage.title, "status": "not run", "wall_s": None, "summary": ""}
        rows.append(row)
        if stage.name not in active:
            row["status"] = "off"
            continue
        i += 1
        prefix = f"[{i}/{len(active)}] {stage.name:<10}"
        missing = [name for name in stage.needs if name not in run.results]
        if not available(stage):
            row.update(status="unavailable", summary="not installed: " + ", ".join(stage.requires))
        elif missing:
            row.update(status="blocked", summary="needs " + ", ".join(missing))
        if row["status"] in ("unavailable", "blocked"):
            echo(f"{prefix} {row['status']} ({row['summary']})")
            continue
        fp = fingerprint(stage, run.recipe, run.results)
        saved = None if stage.name in force else load_valid(run, stage, fp)
        if saved is not None:
            run.results[stage.name] = saved
            row.update(status="cached", wall_s=saved.get("wall_s"), summary=saved.get("summary", ""))
            echo(f"{prefix} cached   {format_seconds(saved.get('wall_s') or 0):>8}   {row['summary']}")
            continue
        echo(f"{prefix} running  {stage.title}  (at {format_seconds(time.perf_counter() - t_start)})")
        attempt = run.dir(stage.name) / ATTEMPT_FILE
        run.resume = _read_fingerprint(attempt) == fp and stage.name not in force
        atomic_write_json(attempt, {"fingerprint": fp})
        t0 = time.perf_counter()
        try:
            result = dict(stage.fn(run))
        except BaseException:
            row.update(status="failed", wall_s=time.perf_counter() - t0)
            echo(f"{prefix} FAILED   after {format_seconds(row['wall_s'])}")
            raise
        wall = time.perf_counter() - t0
        result.setdefault("outputs", [])
        result.update(
            stage=stage.name,
            fingerprint=fp,
            run_id=uuid.uuid4().hex[:12],
            wall_s=round(wall, 3),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        atomic_write_json(run.dir(stage.name) / STAGE_FILE, result)
        run.results[stage.name] = result
        row.update(status="ran", wall_s=wall, summary=result.get("summary", ""))
        echo(f"{prefix} done     {format_seconds(wall):>8}   {row['summary']}")
    return rows


def machine_info() -> dict:
    """Where the run happened: OS, Python, torch, CPU threads, GPU name when there is one."""
    import torch

    info = {
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def resolve_stage_names(names: list[str] | None, stages: list[Stage]) -> list[str]:
    known = [s.name for s in stages]
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown speedrun stage '{name}'; stages: {', '.join(known)}")
    return list(names or [])


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
    """Run every available stage of the lifecycle into `out_dir`, reusing valid earlier results.

    `force` reruns the named stages (and, through their new run ids, everything that needs them);
    `from_stage` reruns that stage and every stage after it. Returns {"out", "wall_s", "rows",
    "results", "machine", "report_md", "report_html"}; all but "results" are also saved as
    `<out>/summary.json`.
    """
    stages = STAGES if stages is None else stages
    force_set = set(resolve_stage_names(force, stages))
    resolve_stage_names(recipe.speedrun.skip, stages)
    if from_stage is not None:
        (from_stage,) = resolve_stage_names([from_stage], stages)
        names = [s.name for s in stages]
        force_set |= set(names[names.index(from_stage) :])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.toml", dump_toml(to_dict(recipe)))  # the resolved recipe, to rerun
    run = Run(recipe=recipe, out=out, verbose=verbose)
    machine = machine_info()
    echo(
        f"llmlab speedrun → {out}  ({machine['device']}, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads)"
    )
    t0 = time.perf_counter()
    rows: list[dict] = []
    summary: dict = {"out": str(out), "machine": machine, "rows": rows, "results": run.results}
    try:
        run_stages(stages, run, force=force_set, echo=echo, rows=rows)
    finally:  # also after a failed stage: the report shows what is done
        rows += [
            {"stage": s.name, "title": s.title, "status": "not run", "wall_s": None, "summary": ""}
            for s in stages[len(rows) :]
        ]
        summary["wall_s"] = time.perf_counter() - t0
        if report:
            from llmlab.eval.report import write_report

            md, page = write_report(
                out, rows=rows, results=run.results, machine=machine, recipe=to_dict(recipe)
            )
            summary["report_md"], summary["report_html"] = str(md), str(page)
            atomic_write_json(
                out / "summary.json",
                {k: summary[k] for k in ("out", "wall_s", "machine", "rows", "report_md", "report_html")},
            )
    return summary


def summary_table(rows: list[dict]) -> str:
    """The end-of-run table: one line per stage with its status, wall time and key numbers."""
    lines = [f"{'stage':<11} {'status':<12} {'wall':>8}   key numbers"]
    total = 0.0
    for r in rows:
        wall = r.get("wall_s")
        if r["status"] == "ran" and wall:
            total += wall
        lines.append(
            f"{r['stage']:<11} {r['status']:<12} {format_seconds(wall) if wall else '-':>8}   "
            f"{r.get('summary', '')}"
        )
    lines.append(f"{'total':<11} {'(this call)':<12} {format_seconds(total):>8}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The stages. Each calls one public Python API of another part of llmlab.
# ---------------------------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _human(n: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def stage_data(run: Run) -> dict:
    """Fetch (when built in) and read the corpus; count its documents and bytes."""
    from llmlab.data.corpus import load_documents

    source = run.recipe.data.source
    docs = load_documents(source)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return {
        "source": source,
        "documents": len(docs),
        "bytes": n_bytes,
        "summary": f"{len(docs)} documents, {n_bytes / 1e6:.2f} MB",
    }


def _compression_sample(docs: list[str], max_bytes: int) -> str:
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


def stage_tokenizer(run: Run) -> dict:
    """Train the BPE tokenizer on the training documents (or copy the recipe's), and measure its
    compression, bytes per token (higher is better), on the held-out documents against GPT-2's."""
    from llmlab.data.corpus import load_documents
    from llmlab.data.shards import split_documents
    from llmlab.tokenizer import Tokenizer

    d = run.recipe.data
    out = run.dir("tokenizer") / "tokenizer.json"
    train_docs, val_docs = split_documents(load_documents(d.source), d.val_fraction)  # pretraining's split
    if d.tokenizer:
        tok = Tokenizer.load(d.tokenizer)
    else:
        tok = Tokenizer.train(train_docs, d.vocab_size, pattern=d.pattern)
    tok.save(out)
    text = _compression_sample(val_docs or train_docs, run.recipe.speedrun.compression_bytes)
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
        "outputs": [run.rel(out)],
    }
    try:
        from llmlab.data.corpus import fetch

        gpt2 = Tokenizer.load(fetch("gpt2-ranks"), pattern="gpt2")
        result["gpt2_bytes_per_token"] = n_bytes / max(1, len(gpt2.encode_ordinary(text)))
        result["gpt2_vocab_size"] = gpt2.vocab_size
    except UserError as e:  # offline and not cached: report ours alone
        result["gpt2_note"] = str(e)
    gpt2_note = f" (GPT-2: {result['gpt2_bytes_per_token']:.2f})" if result["gpt2_bytes_per_token"] else ""
    result["summary"] = f"vocab {tok.vocab_size}, {ours:.2f} bytes/token on held-out text{gpt2_note}"
    return result


def _pretrain_recipe(run: Run) -> Recipe:
    recipe = copy.deepcopy(run.recipe)
    recipe.data.tokenizer = str(run.path(run.results["tokenizer"]["outputs"][0]).resolve())
    return recipe


def _fill_from_metrics(res: dict, metrics: Path) -> None:
    """A run resumed at its last step returns no eval numbers: take them from its last logged eval."""
    val = res.get("val_loss")
    if (isinstance(val, int | float) and math.isfinite(val)) or not metrics.exists():
        return
    from llmlab.eval.report import read_metrics

    evals = [r for r in read_metrics(metrics) if r.get("val_loss") is not None]
    if evals:
        res.update({k: v for k, v in evals[-1].items() if k.startswith("val_")})


def stage_pretrain(run: Run) -> dict:
    """Pretrain the base model with the autoregressive objective (the training engineer's `pretrain`).
    An interrupted pretraining run resumes from its last checkpoint."""
    from llmlab.train.pretrain import pretrain

    out = run.dir("pretrain")
    res = dict(pretrain(_pretrain_recipe(run), out, resume=run.resume, verbose=run.verbose))
    _fill_from_metrics(res, out / "metrics.jsonl")
    res["train_wall_s"] = res.pop("wall_s", None)  # the loop's own time; the stage's wall_s is added later
    res["outputs"] = [run.rel(out / f) for f in ("config.json", "model.safetensors", "tokenizer.json")]
    if (out / "metrics.jsonl").exists():
        res["metrics"] = run.rel(out / "metrics.jsonl")
    res["tokens"] = res.get("train_tokens")
    res["summary"] = (
        f"val loss {_fmt(res.get('val_loss'))}, {_fmt(res.get('val_bpb'))} bpb, "
        f"{_human(res.get('params') or 0)} params, {_human(res.get('train_tokens') or 0)} tokens, "
        f"{_human(res.get('flops') or 0)}FLOP"
    )
    return _jsonable(res)


def _load(run: Run, model_dir: Path):
    """(model, tokenizer) on the recipe's device (train.device; "auto" = CUDA when there is one)."""
    import llmlab
    from llmlab.train.distributed import resolve_device

    return llmlab.load(model_dir, device=resolve_device(run.recipe.train.device))


def _eval_tasks(run: Run) -> list[str]:
    from llmlab.eval.tasks import task_names

    return list(run.recipe.speedrun.eval_tasks) or task_names()


def _evaluate_all(run: Run, model_dir: Path, shots: list[int], chat: bool) -> dict:
    """`llmlab.eval.icl.evaluate` for every task: {task: its result dict}."""
    from llmlab.eval.icl import evaluate

    sp = run.recipe.speedrun
    model, tok = _load(run, model_dir)
    return {
        task: _jsonable(evaluate(model, tok, task, shots=shots, chat=chat, limit=sp.eval_limit, seed=sp.seed))
        for task in progress_iter(_eval_tasks(run), desc="eval tasks", unit="task")
    }


def _accuracy_by_k(task_result: dict) -> dict[str, float]:
    """{str(k): accuracy} from one `evaluate` result ({"shots": [k...], "acc": [...]})."""
    return {str(k): float(a) for k, a in zip(task_result["shots"], task_result["acc"])}


def _chance(tasks: dict[str, dict]) -> dict[str, float]:
    """Accuracy of guessing uniformly, for the multiple-choice tasks."""
    return {t: r["chance"] for t, r in tasks.items() if r.get("chance") is not None}


def stage_base_eval(run: Run) -> dict:
    """k-shot in-context-learning accuracy of the base model on held-out task examples."""
    model_dir = run.path(run.results["pretrain"]["outputs"][0]).parent
    shots = run.recipe.speedrun.shots
    tasks = _evaluate_all(run, model_dir, shots, chat=False)
    acc = {t: _accuracy_by_k(r) for t, r in tasks.items()}
    best = [max(a.values()) for a in acc.values() if a]
    mean_best = sum(best) / len(best) if best else None
    return {
        "shots": shots,
        "tasks": tasks,
        "accuracy": acc,
        "chance": _chance(tasks),
        "summary": f"{len(tasks)} tasks, mean best-k accuracy {_fmt(mean_best)}",
    }


def stage_scaling(run: Run) -> dict:
    """A scaling mini-sweep (many small pretraining runs, each finished at its budget, as the spec file
    says: its own data, tokenizer and shapes); Chinchilla approach 3, L(N, D) = E + A/N^α + B/D^β,
    fitted to it; approach 2 when the sweep has IsoFLOP profiles; and, when the spec names a held-out
    run, its forecast vs measured loss. The sweep skips its finished runs, so a rerun is cheap."""
    from llmlab.scaling import compute_optimal, fit_chinchilla, fit_isoflop, forecast, load_spec, run_sweep
    from llmlab.scaling.plot import plot_all
    from llmlab.scaling.sweep import read_results

    out = run.dir("scaling")
    spec = load_spec(run.recipe.speedrun.scaling_spec)
    res: dict[str, Any] = {"spec": run.recipe.speedrun.scaling_spec}
    if spec.sweep.forecast.depth:
        fc = forecast(spec, out / "sweep", progress_bar=run.verbose, verbose=run.verbose)
        fit = fc.pop("fit")
        res["forecast"] = fc
    else:
        run_sweep(spec, out / "sweep", progress_bar=run.verbose)
        fit = None
    csv = out / "sweep" / "results.csv"
    data = read_results(csv)
    if fit is None:
        fit = fit_chinchilla(data["params"], data["tokens"], data["loss"], n_kind=data["params_kind"])
    try:
        iso = fit_isoflop(
            data["params"], data["tokens"], data["loss"], flops=data["flops"], n_kind=data["params_kind"]
        )
    except UserError:  # no IsoFLOP profile with enough runs: approach 3 alone
        iso = None
    largest = float(data["flops"].max())
    res["flops"] = float(data["flops"].sum()) + float(
        res.get("forecast", {}).get("flops", 0.0)
    )  # 6ND per run
    res["tokens"] = int(data["tokens"].sum()) + int(res.get("forecast", {}).get("tokens", 0))
    res.update(
        runs=len(data["loss"]),
        csv=run.rel(csv),
        fit=fit,
        isoflop=iso,
        optimal_at_100x=compute_optimal(fit, 100 * largest),
        outputs=[run.rel(csv)],
    )
    res["plots"] = [run.rel(p) for p in plot_all(data, out / "plots", chin_fit=fit, iso_fit=iso)]
    fc_note = ""
    if "forecast" in res and res["forecast"].get("rel_error") is not None:
        fc_note = f", forecast error {100 * res['forecast']['rel_error']:+.1f}%"
    res["summary"] = (
        f"{res['runs']} runs, α={_fmt(fit.get('alpha'), '.2f')}, β={_fmt(fit.get('beta'), '.2f')}{fc_note}"
    )
    return _jsonable(res)


def stage_sft(run: Run) -> dict:
    """Instruction-tune the base model on chat data with the assistant-only loss (`llmlab.train.sft.sft`).
    An interrupted SFT run resumes from its last checkpoint."""
    from llmlab.train.sft import sft

    base = run.path(run.results["pretrain"]["outputs"][0]).parent
    out = run.dir("sft")
    res = dict(sft(run.recipe, base, out, resume=run.resume, verbose=run.verbose))
    _fill_from_metrics(res, out / "metrics.jsonl")
    res["train_wall_s"] = res.pop("wall_s", None)
    res["outputs"] = [run.rel(out / f) for f in ("config.json", "model.safetensors", "tokenizer.json")]
    if (out / "metrics.jsonl").exists():
        res["metrics"] = run.rel(out / "metrics.jsonl")
    res["tokens"] = res.get("train_tokens")
    res["summary"] = (
        f"val loss {_fmt(res.get('base_val_loss'))} → {_fmt(res.get('val_loss'))} on assistant "
        f"tokens, {res.get('conversations', 0)} conversations, {_human(res.get('tokens') or 0)} tokens"
    )
    return _jsonable(res)


def stage_chat_eval(run: Run) -> dict:
    """Zero-shot accuracy of the SFT model through its chat template, on the same held-out examples."""
    model_dir = run.path(run.results["sft"]["outputs"][0]).parent
    tasks = _evaluate_all(run, model_dir, [0], chat=True)
    acc = {t: _accuracy_by_k(r) for t, r in tasks.items()}
    zero = [a["0"] for a in acc.values()]
    mean = sum(zero) / len(zero) if zero else None
    return {
        "tasks": tasks,
        "accuracy": acc,
        "chance": _chance(tasks),
        "summary": f"{len(tasks)} tasks, mean 0-shot accuracy {_fmt(mean)}",
    }


def stage_samples(run: Run) -> dict:
    """Sample text from the base model and conversations from the SFT model."""
    from llmlab.generate import generate

    sp = run.recipe.speedrun
    kw = dict(max_new_tokens=sp.max_new_tokens, temperature=sp.temperature, top_k=sp.top_k, seed=sp.seed)
    res: dict[str, Any] = {"settings": kw, "base": [], "chat": []}
    if "pretrain" in run.results and sp.base_prompts:
        model, tok = _load(run, run.path(run.results["pretrain"]["outputs"][0]).parent)
        bos = tok.special_tokens["<|bos|>"]  # every training document starts with <|bos|>
        outs = generate(model, tok, [[bos, *tok.encode_ordinary(p)] for p in sp.base_prompts], **kw)
        res["base"] = [{"prompt": p, "completion": c} for p, c in zip(sp.base_prompts, outs)]
    if "sft" in run.results and sp.chat_prompts:
        model, tok = _load(run, run.path(run.results["sft"]["outputs"][0]).parent)
        ids = [tok.render_for_generation([{"role": "user", "content": p}]) for p in sp.chat_prompts]
        outs = generate(model, tok, ids, **kw)
        res["chat"] = [{"user": p, "assistant": c.strip()} for p, c in zip(sp.chat_prompts, outs)]
    res["summary"] = f"{len(res['base'])} base samples, {len(res['chat'])} conversations"
    return res


def _jsonable(x: Any) -> Any:
    """Plain JSON types (Paths → str, tensors/numpy scalars → float, non-finite floats → None)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, bool) or x is None or isinstance(x, str | int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy arrays and scalars, tensors
        return _jsonable(x.tolist())
    return str(x)


STAGES: list[Stage] = [
    Stage(
        "data",
        "fetch and read the corpus",
        stage_data,
        reads=("data.source",),
        requires=("llmlab.data.corpus",),
    ),
    Stage(
        "tokenizer",
        "train the BPE tokenizer, compression vs GPT-2",
        stage_tokenizer,
        reads=(
            "data.source",
            "data.tokenizer",
            "data.vocab_size",
            "data.pattern",
            "data.val_fraction",
            "speedrun.compression_bytes",
        ),
        needs=("data",),
        requires=("llmlab.tokenizer",),
    ),
    Stage(
        "pretrain",
        "pretrain the base model",
        stage_pretrain,
        reads=("data", "model", "train"),
        needs=("tokenizer",),
        requires=("llmlab.train.pretrain",),
    ),
    Stage(
        "base_eval",
        "k-shot evals of the base model",
        stage_base_eval,
        reads=("speedrun.eval_tasks", "speedrun.shots", "speedrun.eval_limit", "speedrun.seed"),
        needs=("pretrain",),
        requires=("llmlab.eval.icl",),
    ),
    Stage(
        "scaling",
        "scaling mini-sweep, fit and forecast",
        stage_scaling,
        reads=("speedrun.scaling_spec",),
        requires=("llmlab.scaling.sweep", "llmlab.scaling.forecast"),
        enabled=lambda recipe: recipe.speedrun.scaling,
    ),
    Stage(
        "sft",
        "supervised fine-tuning on chat data",
        stage_sft,
        reads=("sft", "train"),
        needs=("pretrain",),
        requires=("llmlab.train.sft",),
    ),
    Stage(
        "chat_eval",
        "zero-shot evals of the SFT model",
        stage_chat_eval,
        reads=("speedrun.eval_tasks", "speedrun.eval_limit", "speedrun.seed"),
        needs=("sft",),
        requires=("llmlab.eval.icl",),
    ),
    Stage(
        "samples",
        "sample text and conversations",
        stage_samples,
        reads=(
            "speedrun.base_prompts",
            "speedrun.chat_prompts",
            "speedrun.max_new_tokens",
            "speedrun.temperature",
            "speedrun.top_k",
            "speedrun.seed",
        ),
        needs=("pretrain",),
        uses=("sft",),
        requires=("llmlab.generate",),
    ),
]
