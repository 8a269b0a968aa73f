"""Does the CPU demo hold on every seed? The default recipe, run end to end once per run seed.

Each seed N is one `llmlab speedrun --seed N --out <root>/seed-N` in its own process (every
training stage's seed derives from N: llmlab.config.derive_seeds; the held-out evaluation sets do
not). The runs share only the data and tokenizer caches ($LLMLAB_HOME). A rerun reuses each run's
finished stages, so an interrupted sweep continues where it stopped. The runs start in the checkout
root (relative paths in --set are read from there); each logs to <root>/seed-N.log.

Measured, per seed: the run's wall time (the sum of its stages' times, a reused stage counted at
its first run's time), each target's held-out accuracy with the tools / retrieval (and, for the
targets with a limit on it, the accuracy without), and which targets met their goal
(llmlab.eval.targets_stage: GOALS, met). Then per target min / median / max over the seeds and on
how many it was met, and the wall time's min / median / max. Printed with the CPU (model, AVX
flags), torch version and threads; saved to <root>/seeds.json. With --jobs > 1 the runs share the
cores, so their wall times are not the demo's.

    python benchmarks/demo_seeds.py                           # seeds 0-4, one after another
    python benchmarks/demo_seeds.py --seeds 0,1 --jobs 2      # two at once, one thread each
    python benchmarks/demo_seeds.py --report-only             # the table from the runs so far

Threads: `train.threads` would not do here. It is set only when a training loop starts (the
stages before pretraining run on torch's default), and pretraining reads all of [train], so a
changed value reruns pretraining and every stage after it. The runs get OMP_NUM_THREADS instead (--threads T; with
--jobs J > 1, T = cores // J unless given), which sets torch's default for the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from llmlab.eval.targets_stage import GOALS, met
from llmlab.io import atomic_write_json
from llmlab.report.fmt import num, seconds

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_bf16")


def cpu_info() -> dict:
    """The CPU's model name and which of FLAGS it has (Linux /proc/cpuinfo; else what platform knows)."""
    import platform

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)  # the last core's
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "flags": [f for f in FLAGS if f in flags],
        "cores": os.cpu_count(),
    }


def run_wall(summary: dict) -> float | None:
    """The run's wall time: its stages' times (a reused stage keeps its first run's time), so a
    rerun that only reused stages still reports the run's cost; summary["wall_s"] when no stage has one."""
    walls = [r["wall_s"] for r in summary.get("rows", []) if r.get("status") in ("ran", "cached")]
    walls = [w for w in walls if w is not None]
    return sum(walls) if walls else summary.get("wall_s")


def seed_stats(summaries: list[dict]) -> dict:
    """Per seed and across seeds, from speedrun summaries (summary.json, each with a "seed" added).

    Returns {"seeds": [{"seed", "wall_s", "threads", "failed", "targets": {name: {"with",
    "without", "met"}}}], "targets": {name: {"goal", "most_without", "min", "median", "max", "met",
    "of"}}, "wall_s": {"min", "median", "max"}}, targets in GOALS order. A target a run did not
    measure counts as not met; min / median / max are over the runs that measured it (None if none)."""
    names = [n for n in GOALS if any(n in s.get("targets", {}) for s in summaries)]
    names += sorted({n for s in summaries for n in s.get("targets", {})} - set(names))
    seeds = []
    for s in summaries:
        ts = s.get("targets", {})
        seeds.append(
            {
                "seed": s["seed"],
                "wall_s": run_wall(s),
                "threads": s.get("machine", {}).get("torch_threads"),
                "failed": [r["stage"] for r in s.get("rows", []) if r.get("status") == "failed"],
                "targets": {
                    n: {"with": ts[n].get("with"), "without": ts[n].get("without"), "met": met(n, ts[n])}
                    for n in names
                    if n in ts
                },
            }
        )
    targets = {}
    for n in names:
        values = [x["targets"][n]["with"] for x in seeds if x["targets"].get(n, {}).get("with") is not None]
        _, goal, most_without = GOALS.get(n, ("", None, None))
        targets[n] = {
            "goal": goal,
            "most_without": most_without,
            **spread(values),
            "met": sum(bool(x["targets"].get(n, {}).get("met")) for x in seeds),
            "of": len(seeds),
        }
    walls = [x["wall_s"] for x in seeds if x["wall_s"] is not None]
    return {"seeds": seeds, "targets": targets, "wall_s": spread(walls)}


def spread(values: list[float]) -> dict:
    """min / median / max of `values` (None each when empty)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def format_stats(stats: dict) -> str:
    """`seed_stats`'s numbers as text: one line per seed, then one per target, then the wall time."""
    lines = []
    for x in stats["seeds"]:
        cells = []
        for n, t in x["targets"].items():
            # "without" only where the goal limits it (the calculator: the model must not do it alone)
            limited = stats["targets"][n]["most_without"] is not None
            cells.append(
                f"{n} {num(t['with'], '.2f')}" + (f" (without {num(t['without'], '.2f')})" if limited else "")
            )
        n_met = sum(bool(t["met"]) for t in x["targets"].values())
        failed = f"  FAILED: {', '.join(x['failed'])}" if x["failed"] else ""
        lines.append(
            f"seed {x['seed']:<4} {seconds(x['wall_s']):>9}  {x['threads'] or '?'} threads  "
            f"met {n_met}/{len(stats['targets'])}  " + ", ".join(cells) + failed
        )
    lines.append("")
    lines.append(f"{'target':<24} {'min':>6} {'median':>6} {'max':>6}  {'goal':<21} met")
    for n, t in stats["targets"].items():
        goal = "-" if t["goal"] is None else f">= {t['goal']:.2f}"
        if t["most_without"] is not None:
            goal += f", w/o <= {t['most_without']:.2f}"
        row = " ".join(f"{num(t[k], '.2f'):>6}" for k in ("min", "median", "max"))
        met_text = "-" if t["goal"] is None else f"{t['met']}/{t['of']} seeds"
        lines.append(f"{n:<24} {row}  {goal:<21} {met_text}")
    w = stats["wall_s"]
    lines.append(f"{'wall time':<24} " + " ".join(f"{seconds(w[k]):>6}" for k in ("min", "median", "max")))
    return "\n".join(lines)


def run_seeds(args: argparse.Namespace, root: Path, seeds: list[int], threads: int) -> None:
    """`llmlab speedrun --seed N` for each seed, `args.jobs` at a time, each logging to
    <root>/seed-N.log; `threads` > 0 sets each run's OMP_NUM_THREADS."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    sets = [x for s in args.set for x in ("--set", s)]
    todo, running = list(seeds), {}
    while todo or running:
        while todo and len(running) < args.jobs:
            seed = todo.pop(0)
            out, log = root / f"seed-{seed}", root / f"seed-{seed}.log"
            cmd = [sys.executable, "-m", "llmlab", "speedrun", "--recipe", str(args.recipe)]
            cmd += ["--seed", str(seed), "--out", str(out), *sets]
            print(f"seed {seed}: llmlab {shlex.join(cmd[3:])}  (log {log})", flush=True)
            with open(log, "w") as f:  # the child keeps its own copy of the handle
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
            running[seed] = (proc, time.perf_counter())
        time.sleep(1)
        for seed, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                status = "done" if proc.returncode == 0 else f"exit code {proc.returncode}"
                print(f"seed {seed}: {status} after {seconds(time.perf_counter() - t0)}", flush=True)
                del running[seed]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo-seeds", help="root folder: <out>/seed-N per seed")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated run seeds")
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "cpu-demo.toml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores // jobs threads)")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per run (0 = torch's default)")
    ap.add_argument("--report-only", action="store_true", help="read the runs' summary.json, run nothing")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = Path(args.out).resolve()
    args.recipe = Path(args.recipe).resolve()
    if args.jobs < 1 or args.threads < 0:
        ap.error("--jobs must be >= 1 and --threads >= 0")
    # J runs at once share the cores: J × T threads fight less than J × (all cores) would
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0)
    if not args.report_only:
        root.mkdir(parents=True, exist_ok=True)
        run_seeds(args, root, seeds, threads)

    summaries = []
    for seed in seeds:
        path = root / f"seed-{seed}" / "summary.json"
        if path.exists():
            summaries.append({**json.loads(path.read_text()), "seed": seed})
        else:
            print(f"seed {seed}: no {path}")
    stats = seed_stats(summaries)
    cpu = cpu_info()
    torch_version = {s.get("machine", {}).get("torch") for s in summaries} - {None}
    if not torch_version:  # no run has said: this process's
        import torch

        torch_version = {torch.__version__}
    print(f"\nCPU: {cpu['model']} ({cpu['cores']} cores; {', '.join(cpu['flags']) or 'no AVX2/AVX-512'})")
    how = "report only" if args.report_only else f"OMP_NUM_THREADS {threads or 'unset'}, {args.jobs} at once"
    print(f"torch {', '.join(sorted(torch_version))} (each run's threads below); {how}")
    print(f"recipe {args.recipe}, {len(summaries)} of {len(seeds)} seeds have a summary\n")
    print(format_stats(stats))
    meta = {"cpu": cpu, "torch": sorted(torch_version), "omp_threads": threads, "jobs": args.jobs}
    atomic_write_json(root / "seeds.json", {**meta, "recipe": str(args.recipe), "sets": args.set, **stats})
    print(f"\nwrote {root / 'seeds.json'}")


if __name__ == "__main__":
    main()
