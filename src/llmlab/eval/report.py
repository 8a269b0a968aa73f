"""The speedrun's report card: `report.md` and a self-contained `report.html` built from stage dicts.

The report is a list of blocks (`Heading`, `Para`, `Table`, `Figure`, `Code`) rendered twice: to
Markdown (figures as relative links to PNGs in `<out>/report/`) and to one HTML file with the PNGs
embedded as base64 `data:` URIs, so it can be mailed or opened anywhere.

Sections come from the stage dicts saved by `llmlab.speedrun` (`<out>/<stage>/stage.json`). Each
stage name maps to a section builder in `SECTIONS`; a stage without one gets a generic table of its
scalar numbers. Later stages (alignment, tools, RAG, serving) add their section by adding a builder:

    from llmlab.eval.report import SECTIONS
    SECTIONS["dpo"] = lambda result, ctx: [Heading("Preference tuning"), Table([...], [...])]

Plots use matplotlib's Agg backend: the loss curves from `metrics.jsonl`, ICL accuracy versus the
number of in-context examples k, and base-versus-SFT accuracy bars.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.io import atomic_write_text


# ---------------------------------------------------------------------------------------------------
# Blocks and their two renderings
# ---------------------------------------------------------------------------------------------------
@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Figure:
    path: Path  # a PNG file
    caption: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Table | Figure | Code


def _cell(x: Any) -> str:
    """A table cell: floats with 4 significant digits, None as n/a."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
    return str(x)


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with figures linked relative to `base` (the folder report.md is written to)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):

            def row(cells: list[Any]) -> str:
                return (
                    "| " + " | ".join(_cell(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
                )

            out.append("\n".join([row(b.headers), "|" + "---|" * len(b.headers), *(row(r) for r in b.rows)]))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({Path(os.path.relpath(b.path, base)).as_posix()})\n\n*{b.caption}*")
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font: 15px/1.5 -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 960px; margin: 2em auto; padding: 0 1em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d8dee4; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; white-space: pre-wrap; border-radius: 6px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 90%; }
"""


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: CSS inline, PNGs embedded as base64 data URIs."""
    out = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title>\n<style>{_CSS}</style></head><body>"
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(_cell(h))}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in r) + "</tr>" for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text.rstrip())}</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(ax, axis: str = "both") -> None:
    ax.grid(True, axis=axis, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` (malformed lines, e.g. a half-written last one, are skipped)."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records


def _series(records: list[dict], keys: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(steps, values) for the first of `keys` present in each record."""
    xs, ys = [], []
    for r in records:
        for k in keys:
            v = r.get(k)
            if isinstance(v, int | float) and math.isfinite(v):
                xs.append(r["step"])
                ys.append(v)
                break
    return xs, ys


TRAIN_LOSS_KEYS = ("train_loss", "loss")
VAL_LOSS_KEYS = ("val_loss",)


def plot_loss_curves(
    curves: dict[str, Path], path: Path, extra_val: dict[str, list[tuple[float, float]]] | None = None
) -> Path | None:
    """Training loss (thin line, with a moving average) and validation loss (markers) versus step, one
    panel per run (e.g. pretraining and SFT). `extra_val` adds (step, val loss) points measured outside
    the loop (e.g. the base model's loss before SFT, at step 0). None when no metrics exist."""
    loaded = {name: read_metrics(p) for name, p in curves.items()}
    loaded = {name: recs for name, recs in loaded.items() if recs}
    if not loaded:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(loaded), figsize=(6.2 * len(loaded), 3.8), squeeze=False)
    for ax, (name, recs) in zip(axes[0], loaded.items()):
        xs, ys = _series(recs, TRAIN_LOSS_KEYS)
        if xs:
            w = len(ys) // 25  # smooth long, noisy curves with a trailing moving average of w points
            ax.plot(xs, ys, color="#4c72b0", alpha=0.3 if w >= 3 else 0.9, lw=1, label="train loss")
            if w >= 3:
                smooth = [
                    sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1])
                    for i in range(len(ys))
                ]
                ax.plot(xs, smooth, color="#4c72b0", lw=2, label=f"train loss ({w}-point mean)")
        vx, vy = _series(recs, VAL_LOSS_KEYS)
        for x, y in sorted((extra_val or {}).get(name, [])):
            vx.insert(0, x)
            vy.insert(0, y)
        if vx:
            ax.plot(vx, vy, "o-", color="#dd8452", ms=4, lw=1.5, label="val loss")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        _style(ax)
        ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_icl(
    accuracy: dict[str, dict[str, float]], path: Path, chance: dict[str, float] | None = None
) -> Path | None:
    """Accuracy versus number of in-context examples k, one line per task."""
    accuracy = {t: a for t, a in accuracy.items() if a}
    if not accuracy:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for task, by_k in accuracy.items():
        ks = sorted(by_k, key=int)
        (line,) = ax.plot([int(k) for k in ks], [by_k[k] for k in ks], "o-", lw=1.8, ms=5, label=task)
        if chance and task in chance and chance[task] is not None:
            ax.axhline(chance[task], color=line.get_color(), ls=":", lw=1)
    all_k = sorted({int(k) for a in accuracy.values() for k in a})
    ax.set_xticks(all_k)
    ax.set_xlabel("k (in-context examples)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("base model: in-context learning")
    _style(ax)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_base_vs_sft(
    rows: list[tuple[str, float | None, float | None]],
    path: Path,
    base_label: str = "base (best k-shot)",
    sft_label: str = "SFT (0-shot, chat)",
    chance: dict[str, float] | None = None,
) -> Path | None:
    """Grouped bars: per task, the base model's accuracy beside the SFT model's (dotted: chance)."""
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(9.0, max(5.0, 0.9 * len(rows) + 2.5)), 3.8))
    xs = range(len(rows))
    w = 0.38
    for off, idx, label, color in ((-w / 2, 1, base_label, "#8c8c8c"), (w / 2, 2, sft_label, "#55a868")):
        vals = [r[idx] if r[idx] is not None else 0.0 for r in rows]
        bars = ax.bar([x + off for x in xs], vals, w, label=label, color=color)
        for bar, r in zip(bars, rows):
            text = "n/a" if r[idx] is None else f"{r[idx]:.2f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    marks = [(x, chance[r[0]]) for x, r in zip(xs, rows) if chance and chance.get(r[0]) is not None]
    for i, (x, c) in enumerate(marks):
        ax.hlines(
            c, x - 0.45, x + 0.45, colors="black", linestyles=":", lw=1.3, label="chance" if i == 0 else None
        )
    ax.set_xticks(
        list(xs),
        [r[0] for r in rows],
        rotation=20 if len(rows) > 4 else 0,
        ha="right" if len(rows) > 4 else "center",
    )
    ax.set_ylabel("accuracy (held out)")
    ax.set_ylim(0, 1.1)
    ax.set_title("base vs SFT")
    _style(ax, axis="y")
    ax.legend(frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What section builders see besides their own stage dict."""

    out: Path  # the run folder
    fig_dir: Path  # where PNGs go
    results: dict[str, dict]  # every stage's dict

    def path(self, rel: str) -> Path:
        return self.out / rel


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else _cell(n)


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, int | float) else _cell(x)


def _flops(x: Any) -> str:
    return f"{x:.3e}" if isinstance(x, int | float) and x else _cell(x)


def section_data(r: dict, ctx: Context) -> list[Block]:
    return [
        Heading("Data"),
        Table(
            ["source", "documents", "bytes"],
            [[r.get("source"), _fmt_int(r.get("documents")), _fmt_int(r.get("bytes"))]],
        ),
    ]


def section_tokenizer(r: dict, ctx: Context) -> list[Block]:
    ours, gpt2 = r.get("bytes_per_token"), r.get("gpt2_bytes_per_token")
    rows = [
        [
            "ours (trained here)" if r.get("trained") else "ours (from recipe)",
            _fmt_int(r.get("vocab_size")),
            r.get("pattern"),
            ours,
        ]
    ]
    if gpt2:
        rows.append(["GPT-2 (r50k_base)", _fmt_int(r.get("gpt2_vocab_size")), "gpt2", gpt2])
    blocks: list[Block] = [
        Heading("Tokenizer"),
        Para(
            f"Byte-level BPE, {_fmt_int(r.get('n_merges'))} merges, "
            f"{'trained on the training documents' if r.get('trained') else 'loaded from data.tokenizer'}. "
            f"Compression is bytes per token on {_fmt_int(r.get('sample_bytes'))} bytes of "
            f"{r.get('sample', 'the corpus')} (higher = fewer tokens for the same text)."
        ),
        Table(["tokenizer", "vocab", "split pattern", "bytes/token"], rows),
    ]
    if gpt2 and ours:
        blocks.append(
            Para(
                f"Ours reaches {ours / gpt2:.2f}× GPT-2's compression on this corpus with "
                f"{r.get('vocab_size', 0) / (r.get('gpt2_vocab_size') or 1):.1%} of its vocabulary."
            )
        )
    elif r.get("gpt2_note"):
        blocks.append(Para(f"GPT-2 comparison skipped: {r['gpt2_note']}"))
    return blocks


def _training_table(r: dict) -> Table:
    keys = [
        ("params", "parameters", _fmt_int),
        ("non_embedding_params", "non-embedding parameters", _fmt_int),
        ("train_tokens", "training tokens", _fmt_int),
        ("flops", "training FLOPs", _flops),
        ("steps", "steps", _fmt_int),
        ("conversations", "training conversations", _fmt_int),
        ("epochs", "epochs", _cell),
        ("base_val_loss", "val loss before SFT (nats/token)", _cell),
        ("val_loss", "val loss (nats/token)", _cell),
        ("val_bpb", "val bits per byte", _cell),
        ("unigram_bpb", "unigram baseline bpb", _cell),
        ("tokens_per_s", "tokens/s", _cell),
        ("mfu", "MFU (model FLOP/s ÷ peak)", _pct),
        ("train_wall_s", "training-loop wall time (s)", _cell),
        ("wall_s", "stage wall time (s)", _cell),
    ]
    return Table(
        ["quantity", "value"], [[label, fmt(r[k])] for k, label, fmt in keys if r.get(k) is not None]
    )


def _loss_figure(r: dict, ctx: Context, name: str) -> list[Block]:
    if not r.get("metrics"):
        return []
    before = r.get("base_val_loss")  # SFT: the base model's loss on the same val conversations
    extra = {name: [(0, before)]} if isinstance(before, int | float) else None
    png = plot_loss_curves({name: ctx.path(r["metrics"])}, ctx.fig_dir / f"loss_{name}.png", extra_val=extra)
    return [Figure(png, f"{name}: training and validation loss")] if png else []


def section_pretrain(r: dict, ctx: Context) -> list[Block]:
    blocks: list[Block] = [
        Heading("Pretraining"),
        Para(
            "Objective: minimise the next-token cross-entropy −(1/T) Σₜ log p(xₜ | x₍<ₜ₎); "
            "bits per byte = loss × tokens / (ln 2 × bytes)."
        ),
        _training_table(r),
    ]
    blocks += _loss_figure(r, ctx, "pretrain")
    if r.get("sample"):
        blocks += [Para("End-of-training sample:"), Code(str(r["sample"]))]
    return blocks


def _acc_table(acc: dict[str, dict[str, float]], chance: dict[str, float]) -> Table:
    ks = sorted({k for a in acc.values() for k in a}, key=int)
    return Table(
        ["task", *(f"k={k}" for k in ks), "chance"],
        [[t, *(a.get(k) for k in ks), chance.get(t, "-")] for t, a in acc.items()],
    )


def section_base_eval(r: dict, ctx: Context) -> list[Block]:
    acc, chance = r.get("accuracy", {}), r.get("chance", {})
    blocks: list[Block] = [
        Heading("Base model: in-context learning"),
        Para(
            "Held-out accuracy with k examples from each task's train split in the prompt. "
            "Multiple choice: the option c with the highest log-likelihood Σⱼ log p(cⱼ | "
            "prompt, c₍<ⱼ₎); generation: greedy output equals the answer after normalising. "
            "Chance is uniform guessing over the options (multiple-choice tasks)."
        ),
        _acc_table(acc, chance),
    ]
    png = plot_icl(acc, ctx.fig_dir / "icl.png", chance=chance)
    if png:
        blocks.append(Figure(png, "base model accuracy versus k (dotted: chance)"))
    return blocks


def section_scaling(r: dict, ctx: Context) -> list[Block]:
    fit = r.get("fit") or {}
    blocks: list[Block] = [
        Heading("Scaling mini-sweep"),
        Para(
            f"{r.get('runs')} finished pretraining runs from {r.get('spec')}. Chinchilla approach 3 fits "
            f"L(N, D) = E + A/N^α + B/D^β (Huber loss on log L; N = {fit.get('N', 'n/a')} parameters); "
            "compute-optimal allocation for C ≈ 6ND: N_opt ∝ C^(β/(α+β)), D_opt ∝ C^(α/(α+β))."
        ),
        Table(
            ["E", "A", "B", "α", "β", "N_opt exponent a", "D_opt exponent b"],
            [
                [
                    fit.get("E"),
                    fit.get("A"),
                    fit.get("B"),
                    fit.get("alpha"),
                    fit.get("beta"),
                    fit.get("a_opt"),
                    fit.get("b_opt"),
                ]
            ],
        ),
    ]
    iso = r.get("isoflop") or {}
    if iso.get("a") is not None:
        blocks.append(
            Para(f"Approach 2 (IsoFLOP parabolas): N_opt ∝ C^{iso['a']:.3f}, D_opt ∝ C^{iso['b']:.3f}.")
        )
    opt = r.get("optimal_at_100x") or {}
    if opt:
        blocks += [
            Para("Fitted compute-optimal model at 100× the sweep's largest budget:"),
            Table(
                ["FLOPs C", "N_opt", "D_opt", "tokens per parameter", "predicted loss"],
                [
                    [
                        _flops(opt.get("flops")),
                        _fmt_int(round(opt.get("params") or 0)),
                        _fmt_int(round(opt.get("tokens") or 0)),
                        opt.get("tokens_per_param"),
                        opt.get("loss"),
                    ]
                ],
            ),
        ]
    fc = r.get("forecast") or {}
    if fc.get("predicted") is not None:
        rel = fc.get("rel_error")
        blocks += [
            Para("Forecast: fitted on the sweep, then the larger held-out run trained afterwards:"),
            Table(
                ["run", "N", "D", "FLOPs", "predicted loss", "measured loss", "relative error"],
                [
                    [
                        fc.get("name"),
                        _fmt_int(fc.get("params")),
                        _fmt_int(fc.get("tokens")),
                        _flops(fc.get("flops")),
                        fc.get("predicted"),
                        fc.get("measured"),
                        f"{100 * rel:+.2f}%" if isinstance(rel, int | float) else "n/a",
                    ]
                ],
            ),
        ]
    for p in r.get("plots", []):
        if ctx.path(p).exists():
            blocks.append(Figure(ctx.path(p), f"scaling: {Path(p).stem}"))
    return blocks


def section_sft(r: dict, ctx: Context) -> list[Block]:
    blocks: list[Block] = [
        Heading("Supervised fine-tuning"),
        Para(
            "The same loss on assistant tokens only: −Σₜ mₜ log p(xₜ | x₍<ₜ₎) / Σₜ mₜ, "
            "mₜ = 1 on assistant content and its end-of-turn token."
        ),
        _training_table(r),
    ]
    blocks += _loss_figure(r, ctx, "sft")
    return blocks


def _zero_shot(acc: dict[str, float]) -> float | None:
    return acc.get("0", next(iter(acc.values()), None))


def section_chat_eval(r: dict, ctx: Context) -> list[Block]:
    sft_acc = r.get("accuracy", {})
    base_acc = ctx.results.get("base_eval", {}).get("accuracy", {})
    chance = {**ctx.results.get("base_eval", {}).get("chance", {}), **r.get("chance", {})}
    rows, bars = [], []
    for task, a in sft_acc.items():
        b = base_acc.get(task, {})
        best_k = max(b, key=lambda k: b[k]) if b else None
        rows.append(
            [task, chance.get(task, "-"), b.get("0"), b[best_k] if best_k else None, best_k, a.get("0")]
        )
        bars.append((task, b[best_k] if best_k else None, a.get("0")))
    blocks: list[Block] = [
        Heading("Base vs SFT"),
        Para(
            "Held-out accuracy: the base model with plain k-shot prompts, the SFT model "
            "zero-shot through its chat template."
        ),
        Table(["task", "chance", "base 0-shot", "base best k-shot", "best k", "SFT 0-shot"], rows),
    ]
    png = plot_base_vs_sft(bars, ctx.fig_dir / "base_vs_sft.png", chance=chance)
    if png:
        blocks.append(Figure(png, "held-out accuracy, base vs SFT (dotted: chance, multiple-choice tasks)"))
    examples = [
        [t, ex.get("prompt"), ex.get("answer"), ex.get("prediction")]
        for t, res in r.get("tasks", {}).items()
        for ex in res.get("examples", [])[:2]
    ]
    if examples:
        blocks += [
            Heading("SFT model answers (first held-out examples)", 3),
            Table(["task", "prompt", "answer", "SFT answer"], examples),
        ]
    return blocks


def section_samples(r: dict, ctx: Context) -> list[Block]:
    s = r.get("settings", {})
    blocks: list[Block] = [
        Heading("Samples"),
        Para("Settings: " + ", ".join(f"{k}={v}" for k, v in s.items())),
    ]
    if r.get("base"):
        blocks.append(Heading("Base model (text continuation)", 3))
        blocks += [Code(f"{x['prompt']}{x['completion']}") for x in r["base"]]
    if r.get("chat"):
        blocks.append(Heading("SFT model (conversations)", 3))
        blocks += [Code(f"user: {x['user']}\nassistant: {x['assistant']}") for x in r["chat"]]
    return blocks


def section_generic(name: str) -> Callable[[dict, Context], list[Block]]:
    """For a stage without a builder: its scalar numbers as a table."""

    def build(r: dict, ctx: Context) -> list[Block]:
        skip = {"outputs", "fingerprint", "run_id", "stage", "finished_at", "summary"}
        rows = [[k, v] for k, v in r.items() if k not in skip and isinstance(v, int | float | str | bool)]
        return [Heading(name), Table(["key", "value"], rows)]

    return build


SECTIONS: dict[str, Callable[[dict, Context], list[Block]]] = {
    "data": section_data,
    "tokenizer": section_tokenizer,
    "pretrain": section_pretrain,
    "base_eval": section_base_eval,
    "scaling": section_scaling,
    "sft": section_sft,
    "chat_eval": section_chat_eval,
    "samples": section_samples,
}


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


def _stage_table(rows: list[dict], results: dict[str, dict]) -> Table:
    """One row per stage (status, wall time, training tokens and FLOPs, key numbers) and a total."""
    body, wall, tokens, flops = [], 0.0, 0, 0.0
    for i, r in enumerate(rows):
        res = results.get(r["stage"], {})
        t, f = res.get("tokens"), res.get("flops")
        if r["status"] in ("ran", "cached"):
            wall += r.get("wall_s") or 0.0
            tokens += t if isinstance(t, int) else 0
            flops += f if isinstance(f, int | float) else 0.0
        body.append(
            [
                i + 1,
                r["stage"],
                r["status"],
                _seconds(r.get("wall_s")),
                _fmt_int(t) if t else "-",
                _flops(f) if f else "-",
                r.get("summary", ""),
            ]
        )
    body.append(["", "total", "", _seconds(wall), _fmt_int(tokens), _flops(flops), ""])
    return Table(
        ["#", "stage", "status", "wall time", "training tokens", "training FLOPs", "key numbers"], body
    )


def build_report(
    out: Path, rows: list[dict], results: dict[str, dict], machine: dict, recipe: dict | None = None
) -> list[Block]:
    """All blocks of the report: overview, machine, per-stage table, one section per stage, the recipe."""
    fig_dir = out / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, fig_dir=fig_dir, results=results)
    blocks: list[Block] = [
        Heading("llmlab speedrun report", 1),
        Para(f"Run folder {out} · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
        Heading("Machine"),
        Table(["key", "value"], [[k, v] for k, v in machine.items()]),
        Heading("Stages"),
        Para(
            "Wall time of each stage when it ran (a cached stage shows its original time); tokens and "
            "FLOPs are those spent training (6N per token plus attention, forward and backward)."
        ),
        _stage_table(rows, results),
    ]
    for r in rows:
        res = results.get(r["stage"])
        if res is None:
            continue
        builder = SECTIONS.get(r["stage"]) or section_generic(r["stage"])
        blocks += builder(res, ctx)
    if recipe:
        from llmlab.config import dump_toml

        blocks += [
            Heading("Recipe"),
            Para(
                f"The resolved recipe, also in {out / 'recipe.toml'}; rerun (reusing every valid stage) "
                f"with: llmlab speedrun --recipe {out / 'recipe.toml'} --out {out}"
            ),
            Code(dump_toml(recipe)),
        ]
    return blocks


def write_report(
    out: str | os.PathLike,
    rows: list[dict],
    results: dict[str, dict],
    machine: dict,
    recipe: dict | None = None,
) -> tuple[Path, Path]:
    """Write `<out>/report.md` and `<out>/report.html` (PNGs under `<out>/report/`); return both paths."""
    out = Path(out)
    blocks = build_report(out, rows, results, machine, recipe)
    md, page = out / "report.md", out / "report.html"
    atomic_write_text(md, render_markdown(blocks, base=out))
    atomic_write_text(page, render_html(blocks, title="llmlab speedrun report"))
    return md, page
