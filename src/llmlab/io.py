"""Small shared I/O helpers: atomic writes, TOML in and out, the cache folder, progress bars.

Every file llmlab writes goes through `atomic_write_*`: the bytes land in a temporary file in the same
folder, are flushed and fsync'd, then `os.replace`d over the target. A killed process leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlab.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def llmlab_home() -> Path:
    """The cache folder: `$LLMLAB_HOME`, default `~/.cache/llmlab`."""
    return Path(os.environ.get("LLMLAB_HOME", Path.home() / ".cache" / "llmlab")).expanduser()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror}); choose a writable output path") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a one-line `UserError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed {what} ({e.msg})") from None


def read_jsonl(path: str | os.PathLike, what: str = "JSONL file") -> list[tuple[str, Any]]:
    """(`file:line`, parsed object) for every non-blank line of a JSONL file; a missing file, text that
    is not UTF-8 or a malformed line is a one-line `UserError` naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            where = f"{path}:{lineno}"
            try:
                rows.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    return rows


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file as a dict; a missing or malformed file is a one-line UserError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML ({e})") from None


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of plain values as TOML (enough for resolved recipes)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML's (newlines, quotes too)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for k, v in plain.items():
        lines.append(f"{k} = {val(v)}")

    def section(name: str, d: dict[str, Any]) -> None:
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in d.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {val(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                section(f"{name}.{k}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            section(k, v)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_toml(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """`dump_toml(data)` written atomically (a stage's resolved recipe, to rerun it)."""
    atomic_write_text(path, dump_toml(data))


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool | None = None,
    **kw: Any,
):
    """A tqdm progress bar on stderr (rate and ETA included); silent when stderr is not a terminal
    unless `LLMLAB_PROGRESS=1`."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("LLMLAB_PROGRESS") == "1")
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        dynamic_ncols=True,
        unit_scale=True,
        **kw,
    )
