"""`llmlab scaling fit|plan|plot` on CSVs (the Chinchilla points and synthetic IsoFLOP data), and the
one-line errors with exit code 2. (The sweep itself is exercised in test_sweep.py.)"""

from __future__ import annotations

import json

import pytest

import llmlab.cli


def run(capsys, *args):
    rc = llmlab.cli.main(["scaling", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def chinchilla_csv(tmp_path, chinchilla_points, csv_writer):
    n, d, loss = chinchilla_points
    return csv_writer(tmp_path / "chinchilla.csv", {"params": n, "tokens": d, "loss": loss})


@pytest.fixture
def isoflop_csv(tmp_path, isoflop_data, csv_writer):
    return csv_writer(tmp_path / "iso.csv", isoflop_data)


def test_fit_chinchilla_json_and_plan(capsys, chinchilla_csv, tmp_path):
    fit_path = tmp_path / "fit.json"
    rc, out, _ = run(
        capsys, "fit", "--data", str(chinchilla_csv), "--grid", "small", "--json", "--out", str(fit_path)
    )
    assert rc == 0
    fit = json.loads(out)
    for k in ("E", "A", "B", "alpha", "beta"):
        assert k in fit
    assert fit["alpha"] == pytest.approx(0.3473, rel=0.005) and fit["N"] == "params"
    assert json.loads(fit_path.read_text()) == fit
    rc, out, _ = run(capsys, "plan", "--fit", str(fit_path), "--flops", "1e22", "--json")
    assert rc == 0
    plan = json.loads(out)
    assert 15 < plan["tokens_per_param"] < 30
    assert 6 * plan["params"] * plan["tokens"] == pytest.approx(1e22)
    rc, out, _ = run(capsys, "plan", "--fit", str(fit_path), "--flops", "1e20", "1e22")
    assert rc == 0 and "tokens per parameter" in out and out.count("C = ") == 2


def test_fit_isoflop_and_kaplan_text(capsys, isoflop_csv):
    rc, out, _ = run(capsys, "fit", "--data", str(isoflop_csv), "--form", "isoflop")
    assert rc == 0 and "N_opt" in out and out.count("C = ") == 4
    rc, out, _ = run(
        capsys, "fit", "--data", str(isoflop_csv), "--form", "kaplan", "--variable", "params", "--json"
    )
    fit = json.loads(out)
    assert rc == 0 and fit["form"] == "kaplan" and fit["variable"] == "params"


def test_plot_writes_pngs(capsys, isoflop_csv, tmp_path):
    rc, _out, _ = run(
        capsys, "plot", "--data", str(isoflop_csv), "--grid", "small", "--out", str(tmp_path / "png")
    )
    assert rc == 0
    for name in ("isoflop.png", "frontier.png", "contours.png", "optimal.png"):
        png = tmp_path / "png" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        ("params,loss\n1,2\n", [], "missing column(s) tokens"),
        ("params,tokens,loss\n1e6,2e7,-3\n", [], "column loss: -3 is not positive"),
        ("params,tokens,loss\n1e6,2e7,3\n2e6,1e7,2.9\n", [], "2 data point(s) for 5 free parameters"),
        ("params,tokens,loss\n1e6,2e7,3\n", ["--form", "kaplan"], "1 data point(s) for 2 free parameters"),
    ],
)
def test_bad_csv_is_one_line_exit_2(capsys, tmp_path, content, extra, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    rc, out, err = run(capsys, "fit", "--data", str(p), *extra)
    assert rc == 2 and out == ""
    assert match in err and err.count("\n") == 1 and err.startswith("llmlab: ")


def test_plan_rejects_kaplan_fit(capsys, tmp_path):
    p = tmp_path / "k.json"
    p.write_text(json.dumps({"form": "kaplan", "alpha": 0.07}))
    rc, _, err = run(capsys, "plan", "--fit", str(p), "--flops", "1e20")
    assert rc == 2 and "cannot split compute" in err
