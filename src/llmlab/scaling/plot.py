"""Scaling plots (matplotlib, Agg backend, PNG):

isoflop.png    loss vs N for each compute budget, the fitted parabolas and their minima (approach 2)
frontier.png   loss vs compute C = 6ND for every run, the lower envelope, and L(C) = (C_c/C)^α on it
contours.png   L(N, D) from the approach-3 fit as filled contours, the runs on top, IsoFLOP lines
               D = C/6N and the compute-optimal path (N_opt(C), D_opt(C))
optimal.png    N_opt(C) and D_opt(C): our minima and fitted lines beside Chinchilla's published
               lines (Hoffmann et al. 2022 approach 3, the Epoch AI re-fit, and Table 3's projections)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from llmlab.report.plots import pyplot, save_png
from llmlab.scaling.fit import fit_kaplan
from llmlab.scaling.plan import BESIROGLU_2024, HOFFMANN_2022, HOFFMANN_TABLE3, compute_optimal
from llmlab.scaling.predict import predict_loss


def _save(fig, path: Path) -> Path:
    return save_png(fig, path, dpi=130, tight=True)


def _plain_log_ticks(ax) -> None:
    """About six plain-number ticks (3.2, 3.6, 4) on a log y axis that spans less than a decade,
    instead of matplotlib's lone 4×10⁰."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter

    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_locator(FixedLocator(MaxNLocator(6).tick_values(lo, hi)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(lo, hi)


def _budget_colors(budgets: np.ndarray):
    plt = pyplot()
    lo, hi = np.log10(budgets.min()), np.log10(budgets.max())
    cmap = plt.get_cmap("viridis")
    return lambda c: cmap(0.1 + 0.75 * ((np.log10(c) - lo) / (hi - lo) if hi > lo else 0.5))


def plot_isoflop(data: dict, iso_fit: dict, path: str | os.PathLike) -> Path:
    """Each IsoFLOP profile: its runs (loss vs N), the parabola in log N, and its minimum."""
    from llmlab.scaling.fit import group_budgets

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    grouping = data["budget"] if data.get("budget") is not None else data["flops"]
    labels = group_budgets(grouping)
    budgets = np.array([np.exp(np.mean(np.log(grouping[labels == g]))) for g in range(labels.max() + 1)])
    color = _budget_colors(budgets)
    for g, c in enumerate(budgets):
        m = labels == g
        ax.plot(data["params"][m], data["loss"][m], "o", color=color(c), ms=6, label=f"C = {c:.1e}")
    lo, hi = np.log(data["params"].min()), np.log(data["params"].max())
    for p in iso_fit["profiles"]:
        p0, p1, p2 = p["parabola"]
        x = np.linspace(lo - 0.3, hi + 0.3, 200)
        y = p0 + p1 * x + p2 * x**2
        keep = y <= data["loss"].max() + 0.1 * np.ptp(data["loss"])
        ax.plot(np.exp(x[keep]), y[keep], "-", color=color(p["flops"]), lw=1.5, alpha=0.8)
        ax.plot(p["params_opt"], p["loss_opt"], "*", color=color(p["flops"]), ms=15, mec="black", mew=0.8)
    ax.plot([], [], "*", color="gray", ms=12, mec="black", label="parabola minimum")
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters N ({iso_fit.get('N', 'unspecified')})")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"IsoFLOP profiles (approach 2): N_opt ∝ C^{iso_fit['a']:.2f}, D_opt ∝ C^{iso_fit['b']:.2f}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, Path(path))


def plot_frontier(data: dict, path: str | os.PathLike, chin_fit: dict | None = None) -> Path:
    """Loss vs compute for every run, its lower envelope, and a Kaplan L(C) fit on the envelope."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    c, loss, n = data["flops"], data["loss"], data["params"]
    sc = ax.scatter(c, loss, c=np.log10(n), cmap="viridis", s=28, zorder=3)
    fig.colorbar(sc, ax=ax, label="log₁₀ N")
    # the frontier: the best run of each compute budget, kept if it beats every cheaper budget
    from llmlab.scaling.fit import group_budgets

    labels = group_budgets(data["budget"] if data.get("budget") is not None else c)
    best_of = [np.flatnonzero(labels == g)[np.argmin(loss[labels == g])] for g in range(labels.max() + 1)]
    best, env = np.inf, []
    for i in sorted(best_of, key=lambda i: c[i]):
        if loss[i] < best:
            best = loss[i]
            env.append(i)
    env = np.array(env)
    ax.plot(c[env], loss[env], "-", color="black", lw=1, alpha=0.6, label="frontier (lower envelope)")
    grid = np.logspace(np.log10(c.min()) - 0.2, np.log10(c.max()) + 0.5, 200)
    if env.size >= 2 and np.ptp(np.log(c[env])) > 0:
        kf = fit_kaplan(c[env], loss[env], variable="flops")
        ax.plot(
            grid,
            predict_loss(kf, flops=grid),
            "--",
            color="tab:red",
            label=f"L(C) = (C_c/C)^α, α = {kf['alpha']:.3f}, C_c = {kf['x_c']:.2g}",
        )
    if chin_fit is not None:
        opt = compute_optimal(chin_fit, grid)
        ax.plot(
            grid, opt["loss"], ":", color="tab:blue", lw=2, label="L(N_opt, D_opt) from the approach-3 fit"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("validation loss (nats/token)")
    _plain_log_ticks(ax)
    ax.set_title("Loss vs compute")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_contours(data: dict, chin_fit: dict, path: str | os.PathLike) -> Path:
    """Filled contours of the fitted L(N, D), the runs, IsoFLOP lines and the compute-optimal path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    n, d = data["params"], data["tokens"]
    ln = np.linspace(np.log10(n.min()) - 0.4, np.log10(n.max()) + 0.4, 200)
    ld = np.linspace(np.log10(d.min()) - 0.4, np.log10(d.max()) + 0.4, 200)
    NN, DD = np.meshgrid(10**ln, 10**ld)
    L = predict_loss(chin_fit, NN, DD)
    lo, hi = np.percentile(L, 1), np.percentile(L, 99)
    levels = np.linspace(lo, hi, 16)
    cf = ax.contourf(NN, DD, np.clip(L, lo, hi), levels=levels, cmap="viridis_r")
    ax.contour(NN, DD, L, levels=levels, colors="white", linewidths=0.4, alpha=0.5)
    fig.colorbar(cf, ax=ax, label="fitted loss L(N, D)")
    ax.scatter(
        n,
        d,
        c=data["loss"],
        cmap="viridis_r",
        vmin=lo,
        vmax=hi,
        edgecolors="black",
        s=36,
        zorder=3,
        label="runs (colour = measured loss)",
    )
    budgets = np.unique(data["budget"]) if data.get("budget") is not None else []
    for c in budgets:
        ax.plot(10**ln, c / (6 * 10**ln), "--", color="white", lw=0.8, alpha=0.8)
    cmin, cmax = 6 * 10 ** (ln[0] + ld[0]), 6 * 10 ** (ln[-1] + ld[-1])
    opt = compute_optimal(chin_fit, np.logspace(np.log10(cmin), np.log10(cmax), 200))
    ax.plot(
        opt["params"],
        opt["tokens"],
        "-",
        color="tab:red",
        lw=2,
        label=f"compute-optimal: N ∝ C^{opt['a']:.2f}, D ∝ C^{opt['b']:.2f}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(10 ** ln[0], 10 ** ln[-1])
    ax.set_ylim(10 ** ld[0], 10 ** ld[-1])
    ax.set_xlabel(f"parameters N ({chin_fit.get('N', 'unspecified')})")
    ax.set_ylabel("training tokens D")
    ax.set_title(
        f"L(N, D) = {chin_fit['E']:.2f} + {chin_fit['A']:.3g}/N^{chin_fit['alpha']:.2f} + "
        f"{chin_fit['B']:.3g}/D^{chin_fit['beta']:.2f}"
        + ("   (dashed: IsoFLOP lines)" if len(budgets) else ""),
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, Path(path))


def plot_optimal(path: str | os.PathLike, iso_fit: dict | None = None, chin_fit: dict | None = None) -> Path:
    """N_opt(C) and D_opt(C) on log-log axes: ours beside Chinchilla's published lines."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ours_c = []
    if iso_fit is not None:
        ours_c += [p["flops"] for p in iso_fit["profiles"]]
    if chin_fit is not None and not ours_c:
        ours_c = [1e12, 1e14]
    c_lo = min([*ours_c, 1e18]) / 3
    grid = np.logspace(np.log10(c_lo), 28.5, 300)
    # our fits come from tiny models: draw them six decades past the largest budget, not to 1e28
    ours = grid[grid <= max(ours_c) * 1e6]
    t3 = np.array(HOFFMANN_TABLE3)
    for ax, key, idx, what in ((axes[0], "params", 0, "N_opt"), (axes[1], "tokens", 2, "D_opt")):
        for ref, style in ((HOFFMANN_2022, ":"), (BESIROGLU_2024, "-.")):
            ax.plot(grid, compute_optimal(ref, grid)[key], style, color="gray", lw=1.5, label=ref["source"])
        ax.plot(
            t3[:, 1], t3[:, idx], "s", color="gray", ms=5, mfc="none", label="Hoffmann et al. 2022, Table 3"
        )
        if iso_fit is not None:
            pts = np.array(
                [
                    [p["flops"], p["params_opt" if key == "params" else "tokens_opt"]]
                    for p in iso_fit["profiles"]
                ]
            )
            ax.plot(
                pts[:, 0], pts[:, 1], "*", color="tab:red", ms=12, mec="black", label="ours: IsoFLOP minima"
            )
            k, e = (iso_fit["k_N"], iso_fit["a"]) if key == "params" else (iso_fit["k_D"], iso_fit["b"])
            ax.plot(ours, k * ours**e, "-", color="tab:red", lw=1.5, label=f"ours, approach 2: ∝ C^{e:.2f}")
        if chin_fit is not None:
            opt = compute_optimal(chin_fit, ours)
            ax.plot(
                ours,
                opt[key],
                "--",
                color="tab:blue",
                lw=1.5,
                label=f"ours, approach 3: ∝ C^{opt['a' if key == 'params' else 'b']:.2f}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(f"{what} ({'parameters' if key == 'params' else 'tokens'})")
        ax.set_title(f"{what}(C)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    n_kind = (iso_fit or chin_fit or {}).get("N", "unspecified")
    fig.suptitle(
        f"Compute-optimal allocation: ours (N = {n_kind}) beside Chinchilla (N = total)", fontsize=11
    )
    return _save(fig, Path(path))


def plot_all(
    data: dict, out_dir: str | os.PathLike, chin_fit: dict | None = None, iso_fit: dict | None = None
) -> list[Path]:
    """Every plot that the data and fits allow; returns the PNG paths written."""
    out = Path(out_dir)
    paths = [plot_frontier(data, out / "frontier.png", chin_fit)]
    if iso_fit is not None:
        paths.append(plot_isoflop(data, iso_fit, out / "isoflop.png"))
    if chin_fit is not None:
        paths.append(plot_contours(data, chin_fit, out / "contours.png"))
    if iso_fit is not None or chin_fit is not None:
        paths.append(plot_optimal(out / "optimal.png", iso_fit, chin_fit))
    return paths
