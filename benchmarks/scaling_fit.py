"""Chinchilla approach 3 on the published 4,500-start grid: our batched fit vs the published
procedure (scipy L-BFGS-B run start by start, analytic gradient), in one process, same data.

The data: the 240 Chinchilla points extracted by Epoch AI (tests/scaling/data/). Both sides must
land on the published re-fit (E = 1.8172, A = 477.8, B = 2143, α = 0.3473, β = 0.3672); the ratio
line is the wall-clock speed-up.

    python benchmarks/scaling_fit.py            # the full grid on both sides
    python benchmarks/scaling_fit.py --quick    # every 10th start on the scipy side, extrapolated
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from llmlab.scaling import fit_chinchilla
from llmlab.scaling.fit import _objective, _theta_to_dict, chinchilla_grid

DATA = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "scaling"
    / "data"
    / "chinchilla_svg_extracted_data.csv"
)


def load():
    with open(DATA, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["loss"]))[:-5]  # the published 240
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    return n, c / (6 * n), np.array([float(r["loss"]) for r in rows])


def scipy_per_start(n, d, loss, stride: int):
    """The published procedure: one scipy L-BFGS-B run per start (default tolerances), best wins."""
    logx, logy = np.stack([np.log(n), np.log(d)], 1), np.log(loss)

    def fg(th):
        f, g = _objective(th[None], logx, logy, None, 1e-3)
        return float(f[0]), g[0]

    best = None
    for start in chinchilla_grid("published")[::stride]:
        res = minimize(fg, start, jac=True, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    return _theta_to_dict(best.x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, d, loss = load()
    stride = 10 if args.quick else 1

    t = time.perf_counter()
    ours = fit_chinchilla(n, d, loss)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = scipy_per_start(n, d, loss, stride)
    t_ref = (time.perf_counter() - t) * stride

    for name, fit in (("ours (batched)", ours), ("scipy per start", ref)):
        print(
            f"{name:<16} E={fit['E']:.4f} A={fit['A']:.1f} B={fit['B']:.0f} "
            f"alpha={fit['alpha']:.4f} beta={fit['beta']:.4f}"
        )
    note = " (scipy side: every 10th start, time ×10)" if args.quick else ""
    print(f"approach-3 fit, 4,500 starts: ours {t_ours:.1f}s, scipy per start {t_ref:.1f}s{note}")
    print(f"ratio: {t_ref / t_ours:.1f}x faster than scipy L-BFGS-B per start")


if __name__ == "__main__":
    main()
