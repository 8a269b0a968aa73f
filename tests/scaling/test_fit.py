"""Scaling-law fits: exact recovery on noise-free data, the published Chinchilla re-fit on real data,
the vectorised optimiser against scipy, and one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmlab.errors import UserError
from llmlab.scaling import fit_chinchilla, fit_isoflop, fit_kaplan, predict_loss
from llmlab.scaling.fit import _objective, chinchilla_grid, group_budgets
from llmlab.scaling.lbfgs import lbfgs_batched

# Besiroglu et al. 2024, Huber-grid re-fit (tests/scaling/data/README.md, first row)
PUBLISHED = {"E": 1.8172, "A": 477.8, "B": 2143.0, "alpha": 0.3473, "beta": 0.3672}


def _check_published(fit):
    for k in ("E", "alpha", "beta"):
        assert fit[k] == pytest.approx(PUBLISHED[k], rel=0.005), k
    for k in ("A", "B"):
        assert fit[k] == pytest.approx(PUBLISHED[k], rel=0.05), k


def test_reproduces_published_refit_on_chinchilla_data(chinchilla_points):
    """Approach 3 on the 240 Chinchilla points from the 108-start subset grid ("small", all its
    values on the published grid) lands on the published Huber-grid optimum."""
    n, d, loss = chinchilla_points
    fit = fit_chinchilla(n, d, loss, grid="small", n_kind="total")
    _check_published(fit)
    assert fit["a_opt"] == pytest.approx(0.51, abs=0.01)  # β / (α + β)
    assert fit["N"] == "total" and fit["n_points"] == 240 and fit["starts"] == 108


@pytest.mark.slow
def test_reproduces_published_refit_with_full_grid(chinchilla_points):
    n, d, loss = chinchilla_points
    fit = fit_chinchilla(n, d, loss)
    assert fit["starts"] == 4500
    _check_published(fit)


def test_recovers_noise_free_law(isoflop_data, law):
    n, d = isoflop_data["params"], isoflop_data["tokens"]
    fit = fit_chinchilla(n, d, law(n, d), grid="small")
    for k, v in {"E": 1.5, "A": 30.0, "B": 200.0, "alpha": 0.3, "beta": 0.35}.items():
        assert fit[k] == pytest.approx(v, rel=1e-3), k
    assert fit["objective"] < 1e-10
    assert predict_loss(fit, 1e6, 1e8) == pytest.approx(float(law(1e6, 1e8)), rel=1e-6)


def test_objective_gradient_matches_finite_differences(chinchilla_points):
    n, d, loss = chinchilla_points
    logx, logy = np.stack([np.log(n), np.log(d)], 1), np.log(loss)
    rng = np.random.default_rng(0)
    theta = np.array([[6.0, 7.5, 0.35, 0.37, 0.6], [3.0, 9.0, 0.2, 0.5, 0.1]])
    weights = rng.integers(0, 3, size=(2, n.size)).astype(float)
    for delta in (1e-3, math.inf):
        f, g = _objective(theta, logx, logy, weights, delta)
        h = 1e-6
        for j in range(5):
            e = np.zeros(5)
            e[j] = h
            fd = (
                _objective(theta + e, logx, logy, weights, delta)[0]
                - _objective(theta - e, logx, logy, weights, delta)[0]
            ) / (2 * h)
            np.testing.assert_allclose(g[:, j], fd, rtol=1e-5, atol=1e-9)
        # the objective itself against a slow reference: Σ w · huber(LSE(...) − log L)
        for s in range(2):
            a, b, al, be, e0 = theta[s]
            r = np.logaddexp.reduce([a - al * logx[:, 0], b - be * logx[:, 1], np.full(n.size, e0)], 0) - logy
            hub = (
                np.where(np.abs(r) <= delta, r * r / 2, delta * (np.abs(r) - delta / 2))
                if delta < 1
                else r * r / 2
            )
            assert f[s] == pytest.approx(np.sum(weights[s] * hub), rel=1e-12)


def test_batched_lbfgs_matches_scipy_per_start(chinchilla_points):
    """The vectorised optimiser against scipy's L-BFGS-B run start by start, both with scipy's
    default stopping rules (the published procedure): the same best objective, and nearly every
    start ends where scipy's run ends. (With Huber's δ = 1e-3 the objective is almost piecewise
    linear; a run that crawls along a kink may stop a little earlier or later by the ftol rule.)"""
    from scipy.optimize import minimize

    n, d, loss = chinchilla_points
    logx, logy = np.stack([np.log(n), np.log(d)], 1), np.log(loss)
    starts = chinchilla_grid("small")[::9]  # 12 starts

    def fg(th, idx):
        return _objective(th, logx, logy, None, 1e-3)

    def scipy_fg(th):
        f, g = fg(th[None], None)
        return float(f[0]), g[0]

    _x, f = lbfgs_batched(fg, starts)
    ref = np.array([minimize(scipy_fg, s, jac=True, method="L-BFGS-B").fun for s in starts])
    assert f.min() == pytest.approx(ref.min(), rel=1e-5)
    assert np.isclose(f, ref, rtol=1e-4).sum() >= 10


def test_bootstrap_intervals(isoflop_data):
    d = isoflop_data
    fit = fit_chinchilla(d["params"], d["tokens"], d["loss"], grid="small", bootstrap=16, seed=3)
    again = fit_chinchilla(d["params"], d["tokens"], d["loss"], grid="small", bootstrap=16, seed=3)
    assert fit["intervals"] == again["intervals"]  # same seed, same numbers
    for k in ("E", "A", "B", "alpha", "beta"):
        lo, hi = fit["intervals"][k]
        assert lo < hi
        assert lo <= fit[k] * 1.0001 and fit[k] <= hi * 1.0001, k


def test_isoflop_recovers_planted_vertices():
    """Profiles that are exact parabolas in log N with vertices N_opt = 0.1 · C^0.52: approach 2
    recovers the vertices and the exponent, and D_opt = C / 6N_opt gives b = 1 − a."""
    rows = []
    for c in (1e12, 1e13, 1e14):
        x_opt = math.log(0.1 * c**0.52)
        for x in x_opt + np.linspace(-1.5, 1.0, 6):
            rows.append(
                (math.exp(x), c / (6 * math.exp(x)), 3.0 - 0.1 * math.log10(c) + 0.2 * (x - x_opt) ** 2)
            )
    n, d, loss = (np.array(v) for v in zip(*rows))
    fit = fit_isoflop(n, d, loss)
    assert fit["a"] == pytest.approx(0.52, abs=1e-9)
    assert fit["b"] == pytest.approx(0.48, abs=1e-9)
    assert fit["k_N"] == pytest.approx(0.1, rel=1e-7)
    for p in fit["profiles"]:
        assert p["params_opt"] == pytest.approx(0.1 * p["flops"] ** 0.52, rel=1e-9)
        assert p["inside"]


def test_isoflop_on_law_data_is_close_to_closed_form(isoflop_data):
    d = isoflop_data
    fit = fit_isoflop(d["params"], d["tokens"], d["loss"], flops=d["budget"])
    assert len(fit["profiles"]) == 4
    assert fit["a"] == pytest.approx(0.35 / 0.65, abs=0.05)  # β / (α + β) of the true law


def test_group_budgets():
    labels = group_budgets(np.array([1e12, 1.02e12, 3e12, 2.95e12, 1e13]))
    assert labels.tolist() == [0, 0, 1, 1, 2]


def test_kaplan_exact_power_law():
    x = np.logspace(5, 8, 7)
    fit = fit_kaplan(x, (8.8e13 / x) ** 0.076, variable="params")
    assert fit["alpha"] == pytest.approx(0.076, rel=1e-9)
    assert fit["x_c"] == pytest.approx(8.8e13, rel=1e-6)
    assert fit["E"] == 0.0 and fit["rmse_log"] < 1e-12


def test_kaplan_with_irreducible_term():
    x = np.logspace(10, 16, 9)
    loss = 1.7 + (2.3e8 / x) ** 0.05 * 3.0**0  # E + (X_c / X)^α
    fit = fit_kaplan(x, loss, variable="flops", irreducible=True)
    assert fit["E"] == pytest.approx(1.7, rel=1e-3)
    assert fit["alpha"] == pytest.approx(0.05, rel=1e-3)
    assert predict_loss(fit, flops=1e20) == pytest.approx(1.7 + (2.3e8 / 1e20) ** 0.05, rel=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_chinchilla([1e6, 2e6, 3e6, 4e6], [1e9] * 4, [3, 2.9, 2.8, 2.7]), "4 data point"),
        (lambda: fit_chinchilla([1e6, -2e6] * 3, [1e9] * 6, [3.0] * 6), "row 2 is not a positive"),
        (lambda: fit_kaplan([1e6], [3.0]), "1 data point"),
        (lambda: fit_kaplan([1e6, 1e6, 1e6], [3.0, 2.0, 1.0]), "all values are equal"),
        (lambda: fit_kaplan([1e6, 2e6], [3.0, 0.0]), "loss: value 0 at row 2"),
        (lambda: fit_isoflop([1e6, 2e6, 3e6], [1e9] * 3, [3.0, 2.9, 3.1]), "usable profile"),
    ],
)
def test_bad_input_is_one_line_user_error(call, match):
    with pytest.raises(UserError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
