"""Accuracy-vs-k plots (matplotlib, Agg backend), written atomically as PNG."""

from __future__ import annotations

import io
import os

from llmlab.io import atomic_write_bytes


def plot_curves(results: list[dict], path: str | os.PathLike, title: str = "in-context learning") -> None:
    """One line per task: accuracy against the number of in-context examples k (chance level dashed
    for multiple-choice tasks). With a single k per task, a bar chart instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    single = all(len(r["shots"]) == 1 for r in results)
    if single:
        names = [r["task"] for r in results]
        accs = [r["acc"][0] for r in results]
        bars = ax.bar(names, accs, color="#4C72B0")
        for b, a in zip(bars, accs):
            ax.text(b.get_x() + b.get_width() / 2, a + 0.01, f"{a:.0%}", ha="center", va="bottom", fontsize=8)
        for i, r in enumerate(results):
            if r.get("chance"):
                ax.hlines(r["chance"], i - 0.4, i + 0.4, colors="gray", linestyles="dashed", linewidth=1)
        ax.set_xlabel(f"task (k = {results[0]['shots'][0]})")
        ax.tick_params(axis="x", rotation=30)
    else:
        for r in results:
            (line,) = ax.plot(r["shots"], r["acc"], marker="o", label=f"{r['task']} ({r['kind']})")
            if r.get("chance"):
                ax.axhline(r["chance"], color=line.get_color(), linestyle="dashed", linewidth=0.8, alpha=0.6)
        ax.set_xscale("symlog", linthresh=1)
        ticks = sorted({k for r in results for k in r["shots"]})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.set_xlabel("in-context examples k")
        ax.legend(fontsize=8, loc="best")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
