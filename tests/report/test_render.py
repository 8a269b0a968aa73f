"""The report's blocks, their two renderings, number formatting and the PNG writer."""

from __future__ import annotations

import base64

from llmlab.report import fmt
from llmlab.report.plots import plot_accuracy_by_k, pyplot, save_png
from llmlab.report.render import Code, Figure, Heading, Para, Table, render_html, render_markdown


def test_renderers_escape_their_syntax(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG fake")
    blocks = [
        Heading("T <1>", 1),
        Para("a < b & c"),
        Table(["k", "v"], [["a|b", 0.123456], ["n", None]]),
        Figure(png, "cap"),
        Code("x = '```'\n<tag>"),
    ]
    md = render_markdown(blocks, base=tmp_path)
    assert "| a\\|b | 0.1235 |" in md and "| n | n/a |" in md and "![cap](x.png)" in md
    assert "````\nx = '```'\n<tag>\n````" in md
    page = render_html(blocks, title="t")
    assert "<h1>T &lt;1&gt;</h1>" in page and "<p>a &lt; b &amp; c</p>" in page
    assert "&lt;tag&gt;" in page and base64.b64encode(b"\x89PNG fake").decode() in page


def test_number_formats():
    assert [fmt.seconds(s) for s in (3.24, 61, 3725, None)] == ["3.2s", "1m01s", "1h02m05s", "-"]
    assert [fmt.human(n) for n in (512, 2_360_000, 1.884e13)] == ["512", "2.36M", "18.84T"]
    assert fmt.count(12345678) == "12,345,678" and fmt.count(True) == "yes"
    assert fmt.sci(1.8e14) == "1.800e+14" and fmt.pct(0.1234) == "12.3%"
    assert [fmt.cell(x) for x in (0.123456, 123456.0, float("nan"), None, "x")] == [
        "0.1235",
        "1.235e+05",
        "n/a",
        "n/a",
        "x",
    ]
    assert fmt.num(float("inf")) == "n/a" and fmt.num(1.23456, ".2f") == "1.23"


def test_png_writer_is_atomic_and_leaves_no_temporaries(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "a" / "x.png")
    assert path.read_bytes().startswith(b"\x89PNG") and [p.name for p in path.parent.iterdir()] == ["x.png"]
    assert plot_accuracy_by_k({}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    one_k = plot_accuracy_by_k({"a": {"0": 0.5}, "b": {"0": 0.25}}, tmp_path / "bars.png", chance={"a": 0.25})
    assert one_k.read_bytes().startswith(b"\x89PNG")
