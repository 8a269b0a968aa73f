"""The report's plots (matplotlib, Agg backend) and the one PNG writer every plot in llmlab uses.

`save_png` renders into memory and writes the file atomically, so a reader (the report, a browser)
never sees half a PNG. The plots take plain data (metric records, accuracy tables), never stage dicts.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

from llmlab.io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike, dpi: int = 110, tight: bool = False) -> Path:
    """Write `fig` as a PNG atomically and close it; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def style(ax, axis: str = "both") -> None:
    ax.grid(True, axis=axis, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


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


def _moving_average(ys: list[float], w: int) -> list[float]:
    return [sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1]) for i in range(len(ys))]


def plot_loss_curves(
    runs: dict[str, list[dict]], path: Path, extra_val: dict[str, list[tuple[float, float]]] | None = None
) -> Path | None:
    """Training loss (thin line, with a moving average) and validation loss (markers) versus step, one
    panel per run, from metric records ({"step", "loss" | "train_loss", "val_loss"}). `extra_val` adds
    (step, val loss) points measured outside the loop (the base model before SFT, at step 0)."""
    runs = {name: recs for name, recs in runs.items() if recs}
    if not runs:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 3.8), squeeze=False)
    for ax, (name, recs) in zip(axes[0], runs.items()):
        xs, ys = _series(recs, ("train_loss", "loss"))
        if xs:
            w = len(ys) // 25  # smooth long, noisy curves with a trailing moving average of w points
            ax.plot(xs, ys, color="#4c72b0", alpha=0.3 if w >= 3 else 0.9, lw=1, label="train loss")
            if w >= 3:
                ax.plot(
                    xs, _moving_average(ys, w), color="#4c72b0", lw=2, label=f"train loss ({w}-point mean)"
                )
        vx, vy = _series(recs, ("val_loss",))
        for x, y in sorted((extra_val or {}).get(name, []), reverse=True):
            vx.insert(0, x)
            vy.insert(0, y)
        if vx:
            ax.plot(vx, vy, "o-", color="#dd8452", ms=4, lw=1.5, label="val loss")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        style(ax)
        ax.legend(frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_phase_signal(
    points: list[tuple[float, float]],
    path: Path,
    goal: float,
    switch: float | None,
    ylabel: str,
    title: str,
    below: bool = True,
) -> Path | None:
    """A signal a stage watches for a phase change, versus step: the measured (step, value) points, the
    goal (dashed) it must fall below (`below`) or reach, and the step where it did (dotted)."""
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    xs, ys = zip(*points)
    ax.plot(xs, ys, "o-", color="#4c72b0", ms=3, lw=1.5, label="measured")
    ax.axhline(goal, color="#55a868", ls="--", lw=1.2, label=f"goal {'<' if below else '≥'} {goal:g}")
    if switch is not None:
        ax.axvline(switch, color="#dd8452", ls=":", lw=1.5, label=f"reached at step {switch:g}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    style(ax)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_accuracy_by_k(
    accuracy: dict[str, dict[str, float]],
    path: str | os.PathLike,
    chance: dict[str, float] | None = None,
    title: str = "base model: in-context learning",
) -> Path | None:
    """Held-out accuracy versus the number of in-context examples k, one line per task (dotted: chance
    for multiple-choice tasks); with a single k, one bar per task instead."""
    accuracy = {t: a for t, a in accuracy.items() if a}
    if not accuracy:
        return None
    chance = chance or {}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.9))
    all_k = sorted({int(k) for a in accuracy.values() for k in a})
    if len(all_k) == 1:
        k = str(all_k[0])
        names = list(accuracy)
        bars = ax.bar(names, [accuracy[t].get(k, 0.0) for t in names], color="#4c72b0")
        for i, (b, t) in enumerate(zip(bars, names)):
            ax.annotate(
                f"{accuracy[t].get(k, 0.0):.0%}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
            if chance.get(t) is not None:
                ax.hlines(chance[t], i - 0.4, i + 0.4, colors="black", linestyles=":", lw=1.2)
        ax.set_xlabel(f"task (k = {k})")
        ax.tick_params(axis="x", rotation=25)
    else:
        for task, by_k in accuracy.items():
            ks = sorted(by_k, key=int)
            (line,) = ax.plot([int(k) for k in ks], [by_k[k] for k in ks], "o-", lw=1.8, ms=5, label=task)
            if chance.get(task) is not None:
                ax.axhline(chance[task], color=line.get_color(), ls=":", lw=1)
        ax.set_xticks(all_k)
        ax.set_xlabel("k (in-context examples)")
        ax.legend(frameon=False, fontsize=8)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    style(ax)
    fig.tight_layout()
    return save_png(fig, path)


def plot_grouped_bars(
    rows: list[tuple[str, float | None, float | None]],
    path: Path,
    labels: tuple[str, str],
    marks: dict[str, float] | None = None,
    title: str = "",
    ylabel: str = "accuracy (held out)",
    marks_label: str = "chance",
) -> Path | None:
    """Per row (task), two bars side by side (e.g. without / with a stage); dotted: a mark per row
    (chance, or a goal), named in the legend by `marks_label`."""
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(9.0, max(5.0, 0.9 * len(rows) + 2.5)), 3.8))
    xs = range(len(rows))
    w = 0.38
    for off, idx, label, color in ((-w / 2, 1, labels[0], "#8c8c8c"), (w / 2, 2, labels[1], "#55a868")):
        bars = ax.bar([x + off for x in xs], [r[idx] or 0.0 for r in rows], w, label=label, color=color)
        for bar, r in zip(bars, rows):
            ax.annotate(
                "n/a" if r[idx] is None else f"{r[idx]:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    lines = [(x, marks[r[0]]) for x, r in zip(xs, rows) if marks and marks.get(r[0]) is not None]
    for i, (x, c) in enumerate(lines):
        ax.hlines(
            c,
            x - 0.45,
            x + 0.45,
            colors="black",
            linestyles=":",
            lw=1.3,
            zorder=3,
            label=marks_label if i == 0 else None,
        )
    tilt = len(rows) > 4
    ax.set_xticks(
        list(xs), [r[0] for r in rows], rotation=20 if tilt else 0, ha="right" if tilt else "center"
    )
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.22)  # room above the bars for the legend, in one row
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title(title)
    style(ax, axis="y")
    ax.legend(frameon=False, loc="upper left", ncol=3)
    fig.tight_layout()
    return save_png(fig, path)
