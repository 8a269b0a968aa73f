"""L-BFGS over many independent problems at once (numpy): the multistart engine of the Chinchilla fit.

The two-loop recursion (Nocedal & Wright, Algorithm 7.4) builds the search direction from the last
m pairs (sₖ = xₖ₊₁ − xₖ, yₖ = ∇fₖ₊₁ − ∇fₖ); the step length comes from Armijo backtracking,
f(x + t·p) ≤ f(x) + c₁ t ∇f·p. Every array carries a leading problem axis, so thousands of starts
cost one vectorised run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def lbfgs_batched(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    ftol: float = 2.2e-9,
    gtol: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise S independent smooth problems at once with L-BFGS (two-loop recursion, Armijo
    backtracking), vectorised over the problems.

    `fg(x, idx)` returns (f [s], grad [s, P]) for the rows `idx` of the problem set. A problem stops
    when its relative decrease (f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol (scipy's rule), its
    largest gradient entry ≤ gtol, or a line search finds no decrease. The defaults are scipy
    L-BFGS-B's (factr = 10⁷ → ftol ≈ 2.2e-9, pgtol = 1e-5), so each start stops where the published
    per-start scipy runs would. Returns (x [S, P], f [S]).
    """
    x = np.array(x0, dtype=np.float64)
    S, P = x.shape
    f, g = fg(x, np.arange(S))
    s_hist = np.zeros((S, memory, P))
    y_hist = np.zeros((S, memory, P))
    rho = np.zeros((S, memory))  # 0 marks an empty or skipped slot: the two-loop then ignores it
    gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-12)  # first step has unit length
    active = np.ones(S, dtype=bool)
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi = g[idx]
        # two-loop recursion: d = −H g, newest pair first, then oldest first
        slots = [(it - 1 - j) % memory for j in range(memory)]
        q = gi.copy()
        alphas = {}
        for j in slots:
            alphas[j] = rho[idx, j] * np.einsum("sp,sp->s", s_hist[idx, j], q)
            q -= alphas[j][:, None] * y_hist[idx, j]
        r = gamma[idx, None] * q
        for j in reversed(slots):
            beta = rho[idx, j] * np.einsum("sp,sp->s", y_hist[idx, j], r)
            r += (alphas[j] - beta)[:, None] * s_hist[idx, j]
        d = -r
        slope = np.einsum("sp,sp->s", gi, d)
        uphill = slope >= 0  # not a descent direction: fall back to steepest descent
        d[uphill] = -gi[uphill] * gamma[idx[uphill], None]
        slope[uphill] = np.einsum("sp,sp->s", gi[uphill], d[uphill])
        # weak-Wolfe line search by bisection (Lewis & Overton), vectorised over the problems:
        #   Armijo fails                     → the step is too long:  hi = t
        #   Armijo holds, still steep        → could go further:      lo = t (accepted so far)
        #     (gₜ·d < c₂ g·d)
        #   both hold                        → done
        # t doubles while no upper bracket exists, else bisects [lo, hi]. Expanding steps is what
        # carries a start across the plateaus where A/N^α or B/D^β is negligible.
        t = np.ones(idx.size)
        lo = np.zeros(idx.size)
        hi = np.full(idx.size, np.inf)
        x_new, f_new, g_new = x[idx].copy(), f[idx].copy(), gi.copy()
        found = np.zeros(idx.size, dtype=bool)
        todo = np.arange(idx.size)
        for _ in range(40):
            xt = x[idx[todo]] + t[todo, None] * d[todo]
            ft, gt = fg(xt, idx[todo])
            armijo = np.isfinite(ft) & (ft <= f[idx[todo]] + 1e-4 * t[todo] * slope[todo])
            steep = np.einsum("sp,sp->s", gt, d[todo]) < 0.9 * slope[todo]
            acc = todo[armijo]
            x_new[acc], f_new[acc], g_new[acc] = xt[armijo], ft[armijo], gt[armijo]
            found[acc] = True
            hi[todo[~armijo]] = t[todo[~armijo]]
            lo[todo[armijo & steep]] = t[todo[armijo & steep]]
            todo = todo[~armijo | steep]
            if todo.size == 0:
                break
            t[todo] = np.where(np.isinf(hi[todo]), 2.0 * lo[todo], 0.5 * (lo[todo] + hi[todo]))
        failed = ~found
        s = x_new - x[idx]
        y = g_new - gi
        sy = np.einsum("sp,sp->s", s, y)
        good = (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)) & ~failed
        slot = it % memory
        s_hist[idx, slot] = np.where(good[:, None], s, 0.0)
        y_hist[idx, slot] = np.where(good[:, None], y, 0.0)
        rho[idx, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[idx] = np.where(good, sy / np.maximum(np.einsum("sp,sp->s", y, y), 1e-300), gamma[idx])
        decrease = (f[idx] - f_new) / np.maximum.reduce([np.abs(f[idx]), np.abs(f_new), np.ones(idx.size)])
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        done = failed | (decrease <= ftol) | (np.abs(g_new).max(axis=1) <= gtol)
        active[idx[done]] = False
    return x, f
