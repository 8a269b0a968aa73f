"""The report as blocks (`Heading`, `Para`, `Table`, `Figure`, `Code`), rendered twice: to Markdown
(figures as relative links to their PNGs) and to one self-contained HTML page (PNGs embedded as
base64 `data:` URIs, CSS inline), so the page can be mailed or opened anywhere."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlab.report.fmt import cell


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]  # cells are formatted with fmt.cell unless already strings


@dataclass
class Figure:
    path: Path  # a PNG file
    caption: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Table | Figure | Code


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with figures linked relative to `base` (the folder report.md is written to)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append(_markdown_table(b))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({Path(os.path.relpath(b.path, base)).as_posix()})\n\n*{b.caption}*")
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"


def _markdown_table(t: Table) -> str:
    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(cell(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([row(t.headers), "|" + "---|" * len(t.headers), *(row(r) for r in t.rows)])


_CSS = """
body { font: 15px/1.5 -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 960px; margin: 2em auto; padding: 0 1em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d8dee4; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; white-space: pre-wrap; border-radius: 6px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 90%; }
"""


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: CSS inline, PNGs embedded as base64 data URIs."""
    out = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title>\n<style>{_CSS}</style></head><body>"
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(cell(h))}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in r) + "</tr>" for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text.rstrip())}</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)
