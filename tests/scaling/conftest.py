"""Shared fixtures for the scaling tests: the Chinchilla points (Epoch AI extraction) and synthetic
IsoFLOP data drawn from a known L(N, D)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

TRUE = {"E": 1.5, "A": 30.0, "B": 200.0, "alpha": 0.3, "beta": 0.35}


def chinchilla_law(n, d, p=TRUE):
    return p["E"] + p["A"] / np.asarray(n) ** p["alpha"] + p["B"] / np.asarray(d) ** p["beta"]


@pytest.fixture(scope="session")
def chinchilla_points():
    """The 240 points of the published re-fit: Epoch's 245 minus the 5 highest losses.
    Returns (N, D, L) with D = C / 6N."""
    with open(DATA / "chinchilla_svg_extracted_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = sorted(rows, key=lambda r: float(r["loss"]))[:-5]
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    return n, c / (6 * n), loss


@pytest.fixture
def isoflop_data():
    """IsoFLOP runs from TRUE: 4 budgets × 7 sizes (runs with D < N dropped), 0.3% noise, seed 0."""
    rng = np.random.default_rng(0)
    rows = []
    for c in (1e12, 3e12, 1e13, 3e13):
        for n in np.logspace(4.5, 6.5, 7):
            d = c / (6 * n)
            if d < n:
                continue
            rows.append((n, d, c, float(chinchilla_law(n, d)) * np.exp(rng.normal(0, 0.003))))
    n, d, c, loss = (np.array(x) for x in zip(*rows))
    return {"params": n, "tokens": d, "flops": c, "budget": c, "loss": loss}


def write_csv(path: Path, columns: dict) -> Path:
    keys = list(columns)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in zip(*(columns[k] for k in keys)):
            w.writerow([repr(float(v)) for v in row])
    return path


@pytest.fixture
def law():
    """L(N, D) with the TRUE parameters (a function of n, d, and optionally p)."""
    return chinchilla_law


@pytest.fixture
def csv_writer():
    """write_csv(path, {column: values}) -> path."""
    return write_csv
