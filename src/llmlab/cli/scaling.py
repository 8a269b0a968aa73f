"""`llmlab scaling sweep|fit|plan|forecast|plot|abilities`: scaling laws from runs you train yourself."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from llmlab.cli.argtypes import device, nonneg_int, positive_float, positive_int, shot_list
from llmlab.errors import UserError

FIT_KEYS = ("E", "A", "B", "alpha", "beta")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scaling",
        help="scaling laws: sweeps, fits, compute-optimal plans, forecasts, plots",
        description="Scaling laws on your own runs. `sweep` trains many small models (one CSV of params, "
        "tokens, flops, loss); `fit` fits Kaplan power laws or Chinchilla approach 2 (IsoFLOP parabolas) "
        "or approach 3 (L(N, D) = E + A/N^α + B/D^β); `plan` splits a FLOP budget into N and D; "
        "`forecast` predicts a larger held-out run and trains it; `plot` draws PNGs; `abilities` scores "
        "every run of a sweep on held-out in-context tasks (exact match and answer log-probability).",
    )
    sub = p.add_subparsers(dest="scaling_command", metavar="<action>")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser(
        "sweep",
        help="train every run of a sweep spec (resumable) and write results.csv",
        description="Run a sweep spec (recipes/scaling/*.toml): a [sweep] section of model depths "
        "and IsoFLOP or token budgets, plus the shared [data] [model] [train] recipe. Finished runs "
        "are skipped on a rerun.",
    )
    s.add_argument("--spec", required=True, help="sweep spec TOML, e.g. recipes/scaling/cpu-mini.toml")
    s.add_argument("--out", help="output folder (default runs/scaling/<spec name>)")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. --set sweep.budgets=[1e12,3e12] (repeatable)",
    )
    s.add_argument("--dry-run", action="store_true", help="list the planned runs (N, D, steps) and exit")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_sweep)

    f = sub.add_parser(
        "fit",
        help="fit a scaling law to a CSV of runs",
        description="Fit a CSV with columns params,tokens,loss (flops, budget optional). "
        "chinchilla = approach 3 (Huber δ=1e-3 on log L, L-BFGS from the published 4,500-start "
        "grid); isoflop = approach 2 (parabola per compute budget); kaplan = L(X) = E + (X_c/X)^α "
        "in log space for X = params, tokens or flops.",
    )
    f.add_argument("--data", required=True, help="scaling CSV (e.g. runs/scaling/cpu-mini/results.csv)")
    f.add_argument("--form", choices=["chinchilla", "isoflop", "kaplan"], default="chinchilla")
    f.add_argument(
        "--params-column",
        default="params",
        help="which column is N (e.g. params_total or params_non_embedding; default params)",
    )
    f.add_argument(
        "--variable",
        choices=["params", "tokens", "flops"],
        default="flops",
        help="kaplan: the variable X of L(X) (default flops)",
    )
    f.add_argument("--irreducible", action="store_true", help="kaplan: include the irreducible loss E")
    f.add_argument(
        "--grid",
        choices=["published", "small"],
        default="published",
        help="chinchilla: starting points (published = 4,500; small = 108, for quick looks)",
    )
    f.add_argument(
        "--bootstrap",
        type=nonneg_int,
        default=0,
        metavar="B",
        help="chinchilla: B bootstrap resamples for 95%% intervals (default 0 = none)",
    )
    f.add_argument("--seed", type=nonneg_int, default=0, help="bootstrap seed")
    f.add_argument("--out", help="also write the fit to this JSON file (input to `scaling plan`)")
    f.add_argument("--json", action="store_true", help="print the fit as JSON")
    f.set_defaults(func=cmd_fit)

    pl = sub.add_parser(
        "plan",
        help="compute-optimal N and D for a FLOP budget",
        description="From a fit JSON (chinchilla or isoflop): N_opt(C), D_opt(C), tokens per "
        "parameter and (chinchilla) the predicted loss.",
    )
    pl.add_argument("--fit", required=True, help="fit JSON written by `llmlab scaling fit --out`")
    pl.add_argument(
        "--flops",
        required=True,
        type=positive_float,
        nargs="+",
        metavar="C",
        help="FLOP budget(s), e.g. 1e18",
    )
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    fc = sub.add_parser(
        "forecast",
        help="fit the sweep, predict a held-out larger run, train it, compare",
        description="Runs (or reuses) the sweep of --spec, fits approach 3 on it, predicts the "
        "[sweep.forecast] run's loss, trains that run and reports predicted vs measured.",
    )
    fc.add_argument("--spec", required=True)
    fc.add_argument("--out", help="output folder (default runs/scaling/<spec name>)")
    fc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    fc.add_argument("--grid", choices=["published", "small"], default="published")
    fc.add_argument("--json", action="store_true")
    fc.set_defaults(func=cmd_forecast)

    pt = sub.add_parser(
        "plot",
        help="IsoFLOP, frontier, L(N, D) contour and N_opt/D_opt PNGs",
        description="Fits approach 2 and 3 on the CSV (unless --fit gives a chinchilla fit) and "
        "writes isoflop.png, frontier.png, contours.png, optimal.png.",
    )
    pt.add_argument("--data", required=True, help="scaling CSV")
    pt.add_argument("--fit", help="a chinchilla fit JSON to use instead of fitting")
    pt.add_argument("--out", help="folder for the PNGs (default: next to the CSV)")
    pt.add_argument("--grid", choices=["published", "small"], default="published")
    pt.set_defaults(func=cmd_plot)

    ab = sub.add_parser(
        "abilities",
        help="every finished run of a sweep on held-out ICL tasks: exact match and answer log-prob vs FLOPs",
        description="Evaluates every finished run of a sweep folder (and its held-out forecast run) on "
        "in-context tasks at each k: exact match / accuracy (the discontinuous metric) and the "
        "log-probability of the correct answer (the continuous one); fits the answer loss per token "
        "L(C) = (C_c/C)^α, forecasts the held-out run, and writes abilities.json and one PNG per task.",
    )
    ab.add_argument("--sweep", required=True, metavar="DIR", help="sweep folder (e.g. runs/scaling/cpu-mini)")
    ab.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="NAME|FILE",
        help="built-in task names or .jsonl task files (default: every built-in task)",
    )
    ab.add_argument(
        "--shots",
        type=shot_list,
        default=[0, 1, 4],
        metavar="K,K,...",
        help="numbers of in-context examples (default 0,1,4)",
    )
    ab.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="test examples per task (default 100)"
    )
    ab.add_argument("--seed", type=nonneg_int, default=0, help="seed for choosing the few-shot examples")
    ab.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or mps")
    ab.add_argument(
        "--out", metavar="DIR", help="folder for abilities.json and the PNGs (default DIR/abilities)"
    )
    ab.add_argument("--json", action="store_true", help="print the table and fits as JSON")
    ab.set_defaults(func=cmd_abilities)


def _out_dir(args) -> Path:
    return Path(args.out) if args.out else Path("runs") / "scaling" / Path(args.spec).stem


def cmd_sweep(args) -> int:
    from llmlab.scaling.sweep import load_spec, plan_runs, read_results, run_sweep

    spec = load_spec(args.spec, args.set)
    out = _out_dir(args)
    if args.dry_run:
        runs, dropped = plan_runs(spec)
        rows = [
            {
                "name": r.name,
                "params": r.params,
                "tokens": r.tokens,
                "steps": r.steps,
                "flops": 6.0 * r.params * r.tokens,
                "tokens_per_param": r.tokens / r.params,
                **r.shape,
            }
            for r in runs
        ]
        if args.json:
            print(json.dumps({"runs": rows, "dropped": [r.name for r in dropped]}, indent=2))
        else:
            print(f"{'name':<14}{'N':>10}{'D':>12}{'D/N':>8}{'steps':>7}  shape")
            for r in rows:
                print(
                    f"{r['name']:<14}{r['params']:>10,}{r['tokens']:>12,}{r['tokens_per_param']:>8.1f}"
                    f"{r['steps']:>7}  {r['n_layer']}×{r['d_model']} ({r['n_head']} heads, d_ff {r['d_ff']})"
                )
            if dropped:
                print(f"left out (min_steps / max_tokens_per_param): {', '.join(r.name for r in dropped)}")
            print(
                f"total: {len(rows)} runs, {sum(r['tokens'] for r in rows):,} tokens, "
                f"{sum(r['flops'] for r in rows):.3g} FLOPs (6ND, N = {spec.sweep.count})"
            )
        return 0
    csv_path = run_sweep(spec, out)
    data = read_results(csv_path)
    if args.json:
        print(json.dumps({"csv": str(csv_path), "runs": len(data["names"])}))
    else:
        print(f"{len(data['names'])} runs → {csv_path}")
    return 0


def _fit(data: dict, args) -> dict:
    from llmlab.scaling import fit_chinchilla, fit_isoflop, fit_kaplan

    if args.form == "chinchilla":
        return fit_chinchilla(
            data["params"],
            data["tokens"],
            data["loss"],
            grid=args.grid,
            bootstrap=args.bootstrap,
            seed=args.seed,
            n_kind=data["params_kind"],
        )
    if args.form == "isoflop":
        budget = data["budget"] if data["budget"] is not None else data["flops"]
        return fit_isoflop(
            data["params"], data["tokens"], data["loss"], flops=budget, n_kind=data["params_kind"]
        )
    return fit_kaplan(
        data[args.variable],
        data["loss"],
        variable=args.variable,
        irreducible=args.irreducible,
        n_kind=data["params_kind"],
    )


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_fit(args) -> int:
    from llmlab.io import atomic_write_json
    from llmlab.scaling.plan import compute_optimal
    from llmlab.scaling.sweep import read_results

    data = read_results(args.data, args.params_column)
    fit = _fit(data, args)
    if args.out:
        atomic_write_json(args.out, fit)
    if args.json:
        print(json.dumps(fit, indent=2))
        return 0
    n_points = fit["n_points"]
    if fit["form"] == "chinchilla":
        ci = fit.get("intervals", {})
        print(
            f"L(N, D) = E + A/N^α + B/D^β   ({n_points} runs; N = {fit['N']}; Huber δ = {fit['delta']:g} on log L, "
            f"{fit['starts']} starts)"
        )
        for k in FIT_KEYS:
            extra = f"   [{_fmt(ci[k][0])}, {_fmt(ci[k][1])}]" if k in ci else ""
            print(f"  {k:<6}{_fmt(fit[k]):>10}{extra}")
        print(f"  N_opt ∝ C^{fit['a_opt']:.3f}, D_opt ∝ C^{fit['b_opt']:.3f}")
        top = float(data["flops"].max())
        print(f"  at C = {top:.3g}: {compute_optimal(fit, top)['tokens_per_param']:.1f} tokens per parameter")
    elif fit["form"] == "isoflop":
        print(
            f"IsoFLOP (approach 2): N_opt = {fit['k_N']:.3g}·C^{fit['a']:.3f}, D_opt = {fit['k_D']:.3g}·C^{fit['b']:.3f}  "
            f"({len(fit['profiles'])} profiles; N = {fit['N']})"
        )
        for p in fit["profiles"]:
            flag = "" if p["inside"] else "  (minimum outside the sampled sizes: extrapolated)"
            print(
                f"  C = {p['flops']:.3g}: N_opt = {p['params_opt']:.4g}, D_opt = {p['tokens_opt']:.4g}, "
                f"D/N = {p['tokens_opt'] / p['params_opt']:.1f}, loss {p['loss_opt']:.4f}{flag}"
            )
        for s in fit["skipped"]:
            print(f"  skipped C = {s['flops']:.3g}: {s['why']}")
    else:
        e = f"{fit['E']:.4g} + " if fit["irreducible"] else ""
        print(
            f"L({fit['variable']}) = {e}({fit['x_c']:.4g} / {fit['variable']})^{fit['alpha']:.4f}   "
            f"({n_points} runs; rmse of log L {fit['rmse_log']:.4f}; N = {fit['N']})"
        )
    return 0


def cmd_plan(args) -> int:
    from llmlab.io import read_json
    from llmlab.scaling.plan import compute_optimal

    fit = read_json(args.fit, "fit JSON")
    if not isinstance(fit, dict):
        raise UserError(f"{args.fit}: expected a JSON object written by `llmlab scaling fit --out`")
    plans = [compute_optimal(fit, c) for c in args.flops]
    if args.json:
        print(json.dumps(plans if len(plans) > 1 else plans[0], indent=2))
        return 0
    print(
        f"compute-optimal split from a {fit.get('form')} fit (N = {fit.get('N', 'unspecified')}; "
        f"N_opt ∝ C^{plans[0]['a']:.3f}, D_opt ∝ C^{plans[0]['b']:.3f})"
    )
    for p in plans:
        loss = "" if math.isnan(p["loss"]) else f", predicted loss {p['loss']:.4f}"
        print(
            f"  C = {p['flops']:.3g}: N = {p['params']:.4g}, D = {p['tokens']:.4g}, "
            f"{p['tokens_per_param']:.1f} tokens per parameter{loss}"
        )
    return 0


def cmd_forecast(args) -> int:
    from llmlab.scaling.forecast import forecast

    res = forecast(args.spec, _out_dir(args), grid=args.grid, overrides=args.set)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"held-out run {res['name']}: N = {res['params']:,} ({res['N']}), D = {res['tokens']:,}, "
        f"C = {res['flops']:.3g} ({res['flops'] / res['largest_sweep_flops']:.1f}× the largest sweep run)"
    )
    print(
        f"  predicted loss {res['predicted']:.4f}, measured {res['measured']:.4f}, "
        f"error {res['error']:+.4f} ({100 * res['rel_error']:+.2f}%)"
    )
    return 0


def cmd_plot(args) -> int:
    from llmlab.io import read_json
    from llmlab.scaling import fit_chinchilla, fit_isoflop
    from llmlab.scaling.plot import plot_all
    from llmlab.scaling.sweep import read_results

    data = read_results(args.data)
    if args.fit:
        chin = read_json(args.fit, "fit JSON")
        if not isinstance(chin, dict) or chin.get("form") != "chinchilla":
            raise UserError(
                f"{args.fit}: --fit must be a chinchilla fit (llmlab scaling fit --form chinchilla --out)"
            )
    else:
        chin = fit_chinchilla(
            data["params"], data["tokens"], data["loss"], grid=args.grid, n_kind=data["params_kind"]
        )
    try:
        budget = data["budget"] if data["budget"] is not None else data["flops"]
        iso = fit_isoflop(
            data["params"], data["tokens"], data["loss"], flops=budget, n_kind=data["params_kind"]
        )
    except UserError as e:
        print(f"llmlab: no IsoFLOP plot ({e})", file=sys.stderr)
        iso = None
    out = Path(args.out) if args.out else Path(args.data).parent
    for path in plot_all(data, out, chin, iso):
        print(path)
    return 0


def _forecast_text(fc: dict | None) -> str:
    if not fc:
        return ""
    acc = f"exact match predicted {fc['predicted_acc']:.3f}, " if fc["predicted_acc"] is not None else ""
    return (
        f"; held-out run: predicted {fc['predicted_loss']:.3f}, measured {fc['measured_loss']:.3f} "
        f"({100 * fc['rel_error']:+.1f}%), {acc}measured accuracy {fc['measured_acc']:.3f}"
    )


def cmd_abilities(args) -> int:
    from llmlab.scaling.abilities import abilities

    res = abilities(
        args.sweep,
        tasks=args.tasks,
        shots=args.shots,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
        out_dir=args.out,
    )
    if args.json:
        paths = {"plots": [str(p) for p in res["plots"]], "json": str(res["json"])}
        print(json.dumps({"rows": res["rows"], "fits": res["fits"], **paths}, indent=2))
        return 0
    print(
        f"{'model':<20}{'C (FLOPs)':>11}  {'task':<14}{'k':>3}{'n':>5}{'acc':>7}{'log p':>9}{'loss/tok':>9}"
    )
    for r in res["rows"]:
        print(
            f"{r['model'] + (' *' if r['heldout'] else ''):<20}{r['flops']:>11.3g}  {r['task']:<14}{r['k']:>3}"
            f"{r['n']:>5}{r['acc']:>7.3f}{r['logp']:>9.2f}{r['answer_loss']:>9.3f}"
        )
    print("answer loss per token L(C) = (C_c/C)^α on the sweep runs (* = held-out run):")
    for f in res["fits"]:
        if f["alpha"] is None:
            print(f"  {f['task']}, k={f['k']}: no fit ({f['why']})")
            continue
        print(f"  {f['task']}, k={f['k']}: α = {f['alpha']:.4f}{_forecast_text(f.get('forecast'))}")
    for p in res["plots"]:
        print(p)
    return 0
