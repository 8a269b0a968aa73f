"""Compute-optimal allocation: the closed form against a numerical minimisation, and the published
Chinchilla facts (a ≈ 0.51, about 20 tokens per parameter near 1e22 FLOP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from llmlab.errors import UserError
from llmlab.scaling import compute_optimal, predict_loss, tokens_per_param
from llmlab.scaling.plan import BESIROGLU_2024, HOFFMANN_2022


@pytest.mark.parametrize("fit", [BESIROGLU_2024, HOFFMANN_2022])
@pytest.mark.parametrize("flops", [1e18, 1e22, 3e24])
def test_closed_form_matches_numerical_minimum(fit, flops):
    """Minimise L(N, C/6N) over log N numerically; the closed form must land on the same N."""
    res = minimize_scalar(
        lambda x: predict_loss(fit, math.exp(x), flops / (6 * math.exp(x))),
        bounds=(math.log(1e3), math.log(1e15)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    opt = compute_optimal(fit, flops)
    assert opt["params"] == pytest.approx(math.exp(res.x), rel=1e-5)
    assert 6 * opt["params"] * opt["tokens"] == pytest.approx(flops, rel=1e-12)
    assert opt["loss"] == pytest.approx(res.fun, rel=1e-9)
    assert opt["a"] + opt["b"] == pytest.approx(1.0)


def test_published_refit_facts():
    """tests/scaling/data/README.md: a = β/(α+β) ≈ 0.51; about 20 tokens per parameter near 1e22."""
    opt = compute_optimal(BESIROGLU_2024, 1e22)
    assert opt["a"] == pytest.approx(0.51, abs=0.01)
    assert 15 < opt["tokens_per_param"] < 30
    assert tokens_per_param(BESIROGLU_2024, 1e22) == opt["tokens_per_param"]


def test_arrays_and_isoflop_fits():
    fit = {"form": "isoflop", "a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1 / 0.6, "N": "total"}
    opt = compute_optimal(fit, np.array([1e20, 1e22]))
    np.testing.assert_allclose(opt["params"], [1e9, 1e10])
    np.testing.assert_allclose(opt["tokens_per_param"], [1 / 0.06] * 2)
    assert opt["N"] == "total"


@pytest.mark.parametrize(
    ("fit", "flops", "match"),
    [
        ({"form": "kaplan", "alpha": 0.07}, 1e20, "cannot split compute"),
        ({"form": "chinchilla", "E": 1.0, "A": 1.0, "B": 1.0, "alpha": 0.3}, 1e20, "missing key 'beta'"),
        (BESIROGLU_2024, -1.0, "must be positive"),
        ({"form": "what"}, 1e20, "unknown form"),
    ],
)
def test_bad_input(fit, flops, match):
    with pytest.raises(UserError, match=match):
        compute_optimal(fit, flops)


def test_a_law_typed_by_hand_needs_no_form_key():
    """Hoffmann et al. 2022's approach-3 law at Chinchilla's budget C = 5.76e23, derived by hand:
    N_opt = G (C/6)^(β/(α+β)), D_opt = G⁻¹ (C/6)^(α/(α+β)), G = (αA/(βB))^(1/(α+β)).
    With these printed constants that is N ≈ 3.2e10 and D ≈ 3.0e12 (about 93 tokens per parameter,
    the known gap between approach 3 and Chinchilla's own 70B / 1.4T), to float precision."""
    E, A, B, alpha, beta, C = 1.69, 406.4, 410.7, 0.34, 0.28, 5.76e23
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = G * (C / 6) ** (beta / (alpha + beta))
    d_opt = (C / 6) ** (alpha / (alpha + beta)) / G
    opt = compute_optimal({"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}, C)
    assert opt["params"] == pytest.approx(n_opt, rel=1e-12)
    assert opt["tokens"] == pytest.approx(d_opt, rel=1e-12)
    assert opt["loss"] == pytest.approx(E + A / n_opt**alpha + B / d_opt**beta, rel=1e-12)
    assert (opt["params"], opt["tokens"]) == (
        pytest.approx(3.22e10, rel=0.01),
        pytest.approx(2.98e12, rel=0.01),
    )
    assert predict_loss({"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}, n_opt, d_opt) == opt["loss"]


def test_a_hand_typed_isoflop_fit_is_recognised_too():
    opt = compute_optimal({"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1 / 0.6}, 1e20)
    assert opt["params"] == pytest.approx(1e9)


@pytest.mark.parametrize(
    ("fit", "match"),
    [
        (
            {"E": 1.7, "A": 400.0, "alpha": 0.3},
            r"match no form; give the keys of one \(chinchilla: E, A, B, alpha",
        ),
        (
            {
                **{k: v for k, v in HOFFMANN_2022.items() if k != "form"},
                "a": 0.5,
                "b": 0.5,
                "k_N": 1.0,
                "k_D": 1.0,
            },
            'fit chinchilla and isoflop; say which with a "form" key',
        ),
    ],
)
def test_keys_that_match_no_form_or_two_are_one_clear_error(fit, match):
    with pytest.raises(UserError, match=match) as e:
        compute_optimal(fit, 1e20)
    assert "kaplan: variable, alpha, A, E" in str(e.value) and "\n" not in str(e.value)
