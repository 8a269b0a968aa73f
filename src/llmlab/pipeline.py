"""A cached, resumable runner of named stages: the engine behind `llmlab speedrun`. It knows no stage.

A `Stage` is a function `run(ctx) -> dict` plus what it depends on. The function reads the recipe and
the results of earlier stages, writes its files under `<out>/<stage>/`, and returns a dict of numbers
(made JSON-able here) with "outputs" (paths relative to the run folder) and a one-line "summary". When
it completes, the runner adds the wall time and saves the dict atomically as `<out>/<stage>/stage.json`.
On the next call a stage is skipped, and its saved dict reused, when

    stage.json exists  ∧  every path in its "outputs" exists  ∧  its fingerprint matches,

    fingerprint = sha256(stage name, the recipe values it reads, the contents of the files those
                         values name, the run ids of the stages it needs or uses)

so an interrupted run continues where it stopped, a changed `train.steps` (or an edited data file)
reruns pretraining and everything downstream of it, and a changed sampling setting reruns only the
samples. Every completed stage gets a fresh random `run_id`, so forcing a stage also reruns its
dependants. A stage whose modules are not installed, or that the recipe turns off, is listed and left out.

A stage may also carry `section(result, ctx) -> blocks` (its part of the report) and
`headline(result, results) -> rows` (its lines in the report's one-screen summary); see docs/stages.md.
"""

from __future__ import annotations

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

from llmlab.config import Recipe, to_dict
from llmlab.errors import UserError
from llmlab.io import atomic_write_json
from llmlab.report.fmt import seconds

STAGE_FILE = "stage.json"
ATTEMPT_FILE = "attempt.json"  # written when a stage starts: its fingerprint, for safe resumption
STAGE_FORMAT = 2  # bump when a stage dict's meaning changes, so old runs are recomputed
HASH_LIMIT = 256 * 2**20  # files above this are fingerprinted by (size, mtime), not read in full


@dataclass
class Stage:
    """One step of a pipeline.

    `reads` names the recipe sections (or `section.key`s) its result depends on; `files` names recipe
    keys whose values may be paths, whose file contents then join the fingerprint; `needs` names
    earlier stages it must have; `uses` earlier stages it uses when they exist; `requires` modules that
    must be importable; `enabled(recipe)` lets the recipe turn it off.
    """

    name: str
    title: str
    run: Callable[[StageContext], dict]
    section: Callable[..., list] | None = None
    headline: Callable[[dict, dict[str, dict]], list[list]] | None = None
    reads: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    enabled: Callable[[Recipe], bool] = lambda recipe: True


@dataclass
class StageContext:
    """What a running stage sees: the recipe, the run folder, and the results of the stages before it.

    `resume` is True when this stage's last attempt had the same fingerprint and did not finish (it was
    interrupted): a training stage may then continue from its checkpoint. With another fingerprint its
    old checkpoint belongs to other inputs and must not be resumed."""

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
        """A path from a stage dict (relative to the run folder, or absolute)."""
        return self.out / rel

    def rel(self, path: str | os.PathLike) -> str:
        """A path for a stage dict: relative to the run folder when inside it (so the folder can move)."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.out.resolve()))
        except ValueError:
            return str(path)

    def output(self, stage: str, i: int = 0) -> Path:
        """The i-th output path of an earlier stage."""
        return self.path(self.results[stage]["outputs"][i])

    def load_model(self, stage: str):
        """(model, tokenizer) of the model directory an earlier stage wrote, on the recipe's device."""
        import llmlab
        from llmlab.train.distributed import resolve_device

        return llmlab.load(self.output(stage).parent, device=resolve_device(self.recipe.train.device))


# ---- fingerprints ---------------------------------------------------------------------------------
def recipe_value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = getattr(node, part, None)  # a section another stage has not added yet reads as None
    return to_dict(node) if dataclasses.is_dataclass(node) else node


def content_digest(value: Any) -> Any:
    """sha256 of the files a recipe value names (a file, every file under a folder, or a list of
    either); None for a value that names no existing path (e.g. a built-in corpus name)."""
    if isinstance(value, list | tuple):
        return [content_digest(v) for v in value]
    if not isinstance(value, str | os.PathLike) or not str(value):
        return None
    path = Path(value).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        st = f.stat()
        if st.st_size > HASH_LIMIT:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def fingerprint(stage: Stage, recipe: Recipe, results: dict[str, dict]) -> str:
    """sha256 over the stage name, the recipe values it reads, the contents of the files they name,
    and the run ids of the stages it needs or uses."""
    payload = {
        "stage": stage.name,
        "format": STAGE_FORMAT,
        "reads": {key: recipe_value(recipe, key) for key in stage.reads},
        "files": {key: content_digest(recipe_value(recipe, key)) for key in stage.files},
        "needs": {name: results.get(name, {}).get("run_id") for name in stage.needs + stage.uses},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_valid(ctx: StageContext, stage: Stage, fp: str) -> dict | None:
    """The saved dict of `stage` when its output is valid for fingerprint `fp`, else None."""
    try:
        saved = json.loads((ctx.out / stage.name / STAGE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fp:
        return None
    if not all(ctx.path(p).exists() for p in saved.get("outputs", [])):
        return None
    return saved


def _read_fingerprint(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def available(stage: Stage) -> bool:
    """Whether the modules a stage calls exist in this install (an extra may be missing)."""
    for mod in stage.requires:
        try:
            if importlib.util.find_spec(mod) is None:
                return False
        except (ModuleNotFoundError, ValueError):
            return False
    return True


def to_jsonable(x: Any) -> Any:
    """Plain JSON types (Paths → str, tensors/numpy scalars → float, non-finite floats → None)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, bool) or x is None or isinstance(x, str | int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy arrays and scalars, tensors
        return to_jsonable(x.tolist())
    return str(x)


# ---- running --------------------------------------------------------------------------------------
def say(line: str) -> None:
    """The default progress printer: one line to stdout, flushed (the stages' bars go to stderr)."""
    print(line, flush=True)


def new_row(stage: Stage, status: str = "not run") -> dict:
    return {"stage": stage.name, "title": stage.title, "status": status, "wall_s": None, "summary": ""}


def run_stages(
    stages: list[Stage],
    ctx: StageContext,
    force: set[str] | None = None,
    skip: set[str] | None = None,
    echo: Callable[[str], None] = say,
    rows: list[dict] | None = None,
) -> list[dict]:
    """Run (or reuse) each stage in order; return one status row per stage (appended to `rows`).

    A row is {"stage", "title", "status": ran|cached|off|unavailable|blocked|failed, "wall_s", "summary"}.
    A failing stage prints its row and re-raises; everything completed before it stays saved.
    """
    force, skip = force or set(), skip or set()
    rows = [] if rows is None else rows
    t_start = time.perf_counter()
    active = [s.name for s in stages if s.enabled(ctx.recipe) and s.name not in skip]
    for stage in stages:
        row = new_row(stage)
        rows.append(row)
        if stage.name not in active:
            row["status"] = "off"
            continue
        prefix = f"[{active.index(stage.name) + 1}/{len(active)}] {stage.name:<10}"
        missing = [name for name in stage.needs if name not in ctx.results]
        if not available(stage):
            row.update(status="unavailable", summary="not installed: " + ", ".join(stage.requires))
        elif missing:
            row.update(status="blocked", summary="needs " + ", ".join(missing))
        if row["status"] in ("unavailable", "blocked"):
            echo(f"{prefix} {row['status']} ({row['summary']})")
            continue
        fp = fingerprint(stage, ctx.recipe, ctx.results)
        saved = None if stage.name in force else load_valid(ctx, stage, fp)
        if saved is not None:
            ctx.results[stage.name] = saved
            row.update(status="cached", wall_s=saved.get("wall_s"), summary=saved.get("summary", ""))
            echo(f"{prefix} cached   {seconds(saved.get('wall_s') or 0):>8}   {row['summary']}")
            continue
        echo(f"{prefix} running  {stage.title}  (at {seconds(time.perf_counter() - t_start)})")
        attempt = ctx.dir(stage.name) / ATTEMPT_FILE
        ctx.resume = _read_fingerprint(attempt) == fp and stage.name not in force
        atomic_write_json(attempt, {"fingerprint": fp})
        t0 = time.perf_counter()
        try:
            result = to_jsonable(dict(stage.run(ctx)))
        except BaseException as e:
            # an expected failure (a UserError) says why in the row, and so in the report's table
            why = str(e).splitlines()[0] if isinstance(e, UserError) and str(e) else ""
            row.update(status="failed", wall_s=time.perf_counter() - t0, summary=why)
            echo(f"{prefix} FAILED   after {seconds(row['wall_s'])}" + (f": {why}" if why else ""))
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
        atomic_write_json(ctx.dir(stage.name) / STAGE_FILE, result)
        ctx.results[stage.name] = result
        row.update(status="ran", wall_s=wall, summary=result.get("summary", ""))
        echo(f"{prefix} done     {seconds(wall):>8}   {row['summary']}")
    return rows


def resolve_stage_names(names: list[str] | None, stages: list[Stage]) -> list[str]:
    known = [s.name for s in stages]
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown speedrun stage '{name}'; stages: {', '.join(known)}")
    return list(names or [])


def summary_table(rows: list[dict]) -> str:
    """The end-of-run table: one line per stage with its status, wall time and key numbers."""
    lines = [f"{'stage':<11} {'status':<12} {'wall':>8}   key numbers"]
    total = 0.0
    for r in rows:
        wall = r.get("wall_s")
        if r["status"] == "ran" and wall:
            total += wall
        lines.append(
            f"{r['stage']:<11} {r['status']:<12} {seconds(wall) if wall else '-':>8}   {r['summary']}"
        )
    lines.append(f"{'total':<11} {'(this call)':<12} {seconds(total):>8}")
    return "\n".join(lines)


def machine_info() -> dict:
    """Where the run happened: OS, CPU, Python, torch, threads, GPU name when there is one."""
    import torch

    info = {
        "platform": platform.platform(terse=True),
        "cpu": platform.processor() or platform.machine(),
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
