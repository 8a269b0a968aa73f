"""Human preferences: `POST /v1/preferences` turns one judgement into one line of preference data.

A judgement (from the chat page's compare mode, or any client):

    {"prompt": [the messages up to the answers] or "a question",
     "a": {"content": "…", "model": "sft"}, "b": {"content": "…", "model": "sft"},
     "choice": "a" | "b" | "tie" | "both_bad",
     "edited": "a better version of the chosen answer",       (optional; only with a or b)
     "annotator": "alice", "sampling": {"temperature": 0.8}}  (optional)

The line appended to `--preferences FILE` is exactly what `llmlab reward` and `llmlab dpo` read
(`llmlab.align.data.record_to_preference` checks it before it is written):

    {"prompt": [...], "chosen": "…", "rejected": "…",
     "meta": {"label": "a", "models": {"chosen": "sft", "rejected": "sft"}, "time": "…Z",
              "sampling": {...}, "annotator": "alice", "original": "the chosen answer before the edit"}}

chosen = the picked answer (its edit, when given), rejected = the other. A tie or "both bad" keeps
chosen = a, rejected = b and says so in `meta.label`; the trainers skip those rows unless
`keep_ties` is set. `llmlab prefs stats FILE` counts, and measures agreement and win rates.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmlab.align.data import record_to_preference
from llmlab.errors import UserError
from llmlab.serve.errors import APIError, bad_field
from llmlab.serve.protocol import Message, _Body
from llmlab.serve.requests import template_messages
from llmlab.tokenizer.chat import validate

CHOICES = ("a", "b", "tie", "both_bad")


class Answer(_Body):
    content: str
    model: str | None = Field(None, max_length=256)  # the model (or checkpoint) that wrote it


class PreferenceRequest(_Body):
    prompt: str | list[Message] = Field(min_length=1)
    a: Answer
    b: Answer
    choice: Literal["a", "b", "tie", "both_bad"]
    edited: str | None = None
    annotator: str | None = Field(None, max_length=256)
    sampling: dict[str, Any] | None = Field(None, max_length=64)


def preference_record(body: PreferenceRequest, time: datetime | None = None) -> dict:
    """The JSONL record of one judgement; a 400 naming the field when the trainers could not read it."""
    if isinstance(body.prompt, str):
        prompt = [{"role": "user", "content": body.prompt}]
    else:
        prompt = template_messages(body.prompt)
    try:
        validate(prompt, for_generation=True)
    except UserError as e:
        raise bad_field("prompt", f"{e} (the prompt ends with the user turn the answers reply to)") from None
    if body.edited is not None and body.choice not in ("a", "b"):
        raise bad_field("edited", f"an edit improves the chosen answer; choice {body.choice!r} chose none")
    for name, text in (("a", body.a.content), ("b", body.b.content), ("edited", body.edited)):
        if text is not None and not text.strip():
            raise bad_field(name, "an empty answer; there is nothing to judge")
    win, lose = (body.b, body.a) if body.choice == "b" else (body.a, body.b)
    chosen = body.edited if body.edited is not None else win.content
    meta: dict[str, Any] = {
        "label": body.choice,
        "models": {"chosen": win.model, "rejected": lose.model},
        "time": (time or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if body.sampling:
        meta["sampling"] = body.sampling
    if body.annotator:
        meta["annotator"] = body.annotator
    if body.edited is not None:
        meta["original"] = win.content
    record = {"prompt": prompt, "chosen": chosen, "rejected": lose.content, "meta": meta}
    try:
        record_to_preference(record, "the judgement")  # the trainers' own check, before anything is written
    except UserError as e:
        raise APIError(400, str(e)) from None
    return record


class PreferenceLog:
    """Appends one JSON line per judgement to a file; safe for concurrent requests and crashes.

    Why each step: the descriptor is opened O_APPEND, so the kernel puts every write at the end of
    the file as it is then (no writer overwrites another's line). A line goes out as ONE os.write of
    its whole encoding, so no other line's bytes can land inside it; the lock orders the appends of
    this process and lets a failed write be undone (truncated back) before the next one starts.
    fsync before returning: the client hears "recorded" only once the line is on disk, so a crash
    after the answer cannot lose it, and a crash during a write leaves at most one torn last line,
    which the next start closes with a newline so that it cannot swallow a new line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(
                f"--preferences {self.path}: cannot open for appending ({e.strerror}); choose a writable file"
            ) from None
        self.lock = threading.Lock()
        self._close_torn_line()

    def _close_torn_line(self) -> None:
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def append(self, record: dict) -> None:
        # ASCII-only JSON: a raw U+2028 or U+0085 in an answer would split the line for readers that
        # split with str.splitlines (align/data.py does).
        line = (json.dumps(record) + "\n").encode("ascii")
        with self.lock:
            start = os.fstat(self.fd).st_size
            try:
                written = os.write(self.fd, line)
                if written != len(line):
                    raise OSError(errno.EIO, f"short write ({written} of {len(line)} bytes)")
                os.fsync(self.fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, start)  # no half line stays behind
                raise

    def close(self) -> None:
        with self.lock, contextlib.suppress(OSError):
            os.close(self.fd)
