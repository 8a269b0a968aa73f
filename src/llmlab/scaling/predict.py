"""What a fitted scaling law predicts: the loss at a size and a data budget.

    Chinchilla:  L(N, D) = E + A / N^α + B / D^β        (D = C / 6N when only the compute C is given)
    Kaplan:      L(X)    = E + A / X^α                  for its one variable X ∈ {N, D, C}

A fit is the JSON-ready dict `llmlab.scaling.fit` returns (or one typed by hand); `fit_form` says which
law it is.
"""

from __future__ import annotations

import numpy as np

from llmlab.errors import UserError
from llmlab.scaling.fit import ArrayLike

# The keys that make each form, for fits typed by hand without a "form" key.
FORM_KEYS = {
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "isoflop": ("a", "b", "k_N", "k_D"),
    "kaplan": ("variable", "alpha", "A", "E"),
}


def fit_form(fit: dict) -> str:
    """The fit's form: its "form" key, else the one form whose keys (FORM_KEYS) it has, so that
    {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28} is a chinchilla law."""
    if fit.get("form") is not None:
        return str(fit["form"])
    forms = [f for f, keys in FORM_KEYS.items() if all(k in fit for k in keys)]
    if len(forms) == 1:
        return forms[0]
    listing = "; ".join(f"{f}: {', '.join(keys)}" for f, keys in FORM_KEYS.items())
    if forms:
        raise UserError(f'fit: its keys fit {" and ".join(forms)}; say which with a "form" key ({listing})')
    raise UserError(
        f'fit: no "form" key and its keys {sorted(fit)} match no form; give the keys of one ({listing})'
    )


def predict_loss(
    fit: dict,
    params: ArrayLike | float | None = None,
    tokens: ArrayLike | float | None = None,
    flops: ArrayLike | float | None = None,
) -> np.ndarray | float:
    """The loss a fit predicts. Chinchilla: L(N, D) (D = C / 6N when only flops is given). Kaplan:
    L(X) for its variable (params, tokens or flops). The form is `fit_form(fit)`."""
    form = fit_form(fit)
    if form == "chinchilla":
        if params is None:
            raise UserError("a Chinchilla prediction needs params (N) and tokens (D) or flops")
        n = np.asarray(params, dtype=np.float64)
        d = np.asarray(tokens if tokens is not None else np.asarray(flops) / (6.0 * n), dtype=np.float64)
        out = fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]
    elif form == "kaplan":
        x = {"params": params, "tokens": tokens, "flops": flops}.get(fit["variable"])
        if x is None:
            raise UserError(f"this Kaplan fit is L({fit['variable']}); give {fit['variable']}")
        out = fit["E"] + fit["A"] / np.asarray(x, dtype=np.float64) ** fit["alpha"]
    else:
        raise UserError(f"cannot predict a loss from a fit of form {form!r}; use a chinchilla or kaplan fit")
    return float(out) if np.ndim(out) == 0 else out
