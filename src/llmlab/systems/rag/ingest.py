"""Ingest: files and folders → documents `(id, title, text)`.

Read: `.txt`, `.md` (title: the first `# heading`), `.html`/`.htm` (text and <title> through
BeautifulSoup, without scripts and styles), `.jsonl` (one `{"id", "text", "title"?}` per line), and
`.pdf` when pypdf is installed. A document's id is its path relative to the folder given (the file
name for a file given directly), or its JSONL `id`. Bytes that are not UTF-8 are replaced (U+FFFD)
with a warning naming the file; a path that does not exist, or inputs with no documents, are errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UserError

SUFFIXES = (".txt", ".md", ".html", ".htm", ".jsonl", ".pdf")


class IngestWarning(UserWarning):
    """A file was read with a problem (e.g. undecodable bytes replaced)."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    source: str  # the file it came from

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{self.title}\0{self.text}".encode()).hexdigest()[:16]


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        warnings.warn(
            f"{path}: not valid UTF-8 (byte {e.start}); undecodable bytes replaced with U+FFFD",
            IngestWarning,
            stacklevel=3,
        )
        return raw.decode("utf-8", errors="replace")


def _html(text: str, fallback: str) -> tuple[str, str]:
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        raise UserError(
            "reading .html needs the [rag] extra: pip install 'llmlab[rag]' (beautifulsoup4)"
        ) from None
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else fallback
    if soup.title:
        soup.title.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return title or fallback, "\n\n".join(line for line in lines if line)


def _markdown_title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def _pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise UserError(f"{path}: reading .pdf needs pypdf (pip install pypdf)") from None
    return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def _jsonl(path: Path) -> list[Document]:
    docs = []
    for i, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UserError(f'{where}: expected {{"id": ..., "text": "...", "title"?: "..."}}')
        if "id" not in obj or not str(obj["id"]).strip():
            raise UserError(f"{where}: a document line needs an 'id'")
        title = obj.get("title") or ""
        docs.append(Document(str(obj["id"]), str(title), obj["text"], str(path)))
    return docs


def read_file(path: Path, doc_id: str) -> list[Document]:
    """The documents in one file (several for .jsonl)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl(path)
    if suffix == ".pdf":
        return [Document(doc_id, path.stem, _pdf(path), str(path))]
    text = _decode(path)
    if suffix in (".html", ".htm"):
        title, text = _html(text, path.stem)
    elif suffix == ".md":
        title = _markdown_title(text, path.stem)
    else:
        title = path.stem
    return [Document(doc_id, title, text, str(path))]


def _files(root: Path) -> Iterable[tuple[Path, str]]:
    if root.is_file():
        yield root, root.name
        return
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        yield f, f.relative_to(root).as_posix()


def read_documents(inputs: Iterable[str | os.PathLike]) -> list[Document]:
    """Every document under `inputs` (files or folders), empty ones skipped; ids must be unique."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UserError("--input: give at least one file or folder")
    docs: dict[str, Document] = {}
    for root in inputs:
        if not root.exists():
            raise UserError(f"--input {root}: no such file or folder")
        for path, doc_id in _files(root):
            for d in read_file(path, doc_id):
                if not d.text.strip():
                    continue
                if d.id in docs:
                    raise UserError(f"{path}: document id {d.id!r} already read from {docs[d.id].source}")
                docs[d.id] = d
    if not docs:
        names = ", ".join(str(p) for p in inputs)
        raise UserError(f"--input {names}: no documents ({', '.join(SUFFIXES)} files with text)")
    return list(docs.values())
