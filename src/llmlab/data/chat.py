"""SFT datasets: read conversations from JSONL (or the built-in synthetic tasks) and tokenize them.

One JSON object per line, in any of three formats (all become a list of chat messages):

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    {"prompt": "Hi", "completion": "Hello!"}                     (optional "system")
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"}       (Alpaca)

Alpaca's user turn is `instruction`, plus a blank line and `input` when the input is not empty.
A malformed line is a `UserError` naming `file:line`. `source = "builtin:NAME"` reads the train split
of a synthetic task (`llmlab.data.synthetic`; NAME = a task or "mix").

Tokenizing renders each conversation through the chat template (`render_chat`) into ids and a loss
mask. A conversation longer than `max_len` tokens is, per `truncate`:
    "warn"   cut to its first max_len tokens (a warning counts them),
    "drop"   left out (a warning counts them),
    "error"  a `UserError` naming the conversation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UserError
from llmlab.io import read_jsonl as read_jsonl_lines
from llmlab.tokenizer.chat import render_chat, validate

TRUNCATE_MODES = ("warn", "drop", "error")


@dataclass
class Conversation:
    messages: list[dict]
    where: str  # "file:line" or "builtin:NAME#i", for error messages


def record_to_messages(obj: object) -> list[dict]:
    """One dataset record (any supported format) → chat messages. Raises UserError without location."""
    if not isinstance(obj, dict):
        raise UserError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return obj["messages"]
    if "prompt" in obj and "completion" in obj:
        msgs = [{"role": "system", "content": obj["system"]}] if obj.get("system") else []
        return [
            *msgs,
            {"role": "user", "content": obj["prompt"]},
            {"role": "assistant", "content": obj["completion"]},
        ]
    if "instruction" in obj and "output" in obj:
        user = obj["instruction"]
        if obj.get("input"):
            user = f"{user}\n\n{obj['input']}"
        return [{"role": "user", "content": user}, {"role": "assistant", "content": obj["output"]}]
    keys = ", ".join(sorted(obj)) or "none"
    raise UserError(
        f"unknown record format (keys: {keys}); expected 'messages', 'prompt'+'completion', "
        "or Alpaca 'instruction'+'input'+'output'"
    )


def read_jsonl(path: str | Path) -> list[Conversation]:
    """All conversations of a JSONL file, validated; errors name `file:line`."""
    convs = []
    for where, obj in read_jsonl_lines(path, "SFT data file"):
        try:
            messages = record_to_messages(obj)
            validate(messages)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        convs.append(Conversation(messages, where))
    if not convs:
        raise UserError(f"{path}: no conversations in the file")
    return convs


def load_conversations(
    source: str | Path, seed: int = 0, split: str = "train", midtrain=None
) -> list[Conversation]:
    """Conversations from `builtin:NAME` (its `split`, shuffled with `seed`), a .jsonl file, or a
    folder of .jsonl files (sorted). `builtin:midtrain` is generated (`llmlab.data.midtrain`) as the
    recipe's [midtrain] section (`midtrain`) says; it has no test split."""
    source_s = str(source)
    if source_s == "builtin:midtrain":
        from llmlab.config import MidtrainSection
        from llmlab.data import midtrain as mt

        cfg = midtrain or MidtrainSection()
        weights = {f: getattr(cfg, f) for f in mt.FAMILIES}
        convs = mt.conversations(
            cfg.conversations, seed, weights, cfg.questions, cfg.copy_tasks, cfg.grounded_questions
        )
        return [Conversation(m, f"{source_s}#{i}") for i, m in enumerate(convs)]
    if source_s.startswith("builtin:"):
        from llmlab.data import synthetic

        name = source_s.split(":", 1)[1]
        if name != "mix" and name not in synthetic.task_names():
            raise UserError(
                f"unknown built-in SFT data '{source_s}'; choose builtin:mix or one of: "
                + ", ".join(f"builtin:{t}" for t in synthetic.task_names())
            )
        convs = synthetic.conversations(name, split, seed=seed)
        return [Conversation(m, f"{source_s}/{split}#{i}") for i, m in enumerate(convs)]
    path = Path(source_s)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise UserError(f"{path}: folder has no .jsonl files")
        return [c for f in files for c in read_jsonl(f)]
    if not path.exists():
        raise UserError(f"{path}: no such SFT data file; pass a .jsonl file, a folder, or builtin:NAME")
    return read_jsonl(path)


def tokenize_conversations(
    tok, convs: list[Conversation], max_len: int, truncate: str = "warn"
) -> list[tuple[list[int], list[int]]]:
    """(ids, loss_mask) per conversation, at most `max_len` tokens each (see module docstring)."""
    if truncate not in TRUNCATE_MODES:
        raise UserError(f"sft.truncate: unknown mode '{truncate}'; choose one of {', '.join(TRUNCATE_MODES)}")
    out, n_long, n_empty = [], 0, 0
    for c in convs:
        try:
            ids, mask = render_chat(tok, c.messages)
        except UserError as e:
            raise UserError(f"{c.where}: {e}") from None
        if len(ids) > max_len:
            if truncate == "error":
                raise UserError(
                    f"{c.where}: conversation has {len(ids)} tokens, more than the {max_len} that fit "
                    "the model's context; shorten it, or set sft.truncate=warn (cut) or drop"
                )
            n_long += 1
            if truncate == "drop":
                continue
            ids, mask = ids[:max_len], mask[:max_len]
            if not any(mask[1:]):  # nothing left to train on
                n_empty += 1
                continue
        out.append((ids, mask))
    if n_long:
        action = "dropped" if truncate == "drop" else f"cut to {max_len} tokens"
        extra = f" ({n_empty} left out: no assistant tokens remained)" if n_empty else ""
        print(
            f"llmlab: warning: {n_long} of {len(convs)} conversations are longer than {max_len} tokens; "
            f"{action}{extra}",
            file=sys.stderr,
        )
    if not out:
        raise UserError("no SFT conversation fits the model's context; use shorter conversations")
    return out
