"""Preference pairs and RL prompts: reading, validating, tokenising, batching.

A preference record (JSONL, one per line) is {"prompt", "chosen", "rejected"} and optionally
"margin" (a number, for the reward model's margin term) and "meta" (anything; `llmlab serve
--preferences` writes who judged, which models, when). Each of the three is a string or a list of
chat messages: a string prompt is one user turn, a string completion one assistant turn. A bad
line is a one-line `UserError` naming `file:line`. `builtin:TASK` builds pairs from a synthetic
task's multiple-choice examples: chosen = the answer, rejected = a wrong choice. A judgement whose
`meta.label` is "tie" or "both_bad" says neither answer is better: such rows are skipped (and
counted on stderr) unless `keep_ties` is asked for (the recipe's `reward.keep_ties`/`dpo.keep_ties`).

Tokenisation splits prompt and completion at the token level with the chat template:

    prompt_ids = render_for_generation(prompt)           … <|user|> question <|end|> <|assistant|>
    full_ids   = render_chat(prompt + completion)        prompt_ids + answer tokens + <|end|>
    completion = full_ids[len(prompt_ids):]

so the end-of-turn token closes every completion, at training and at scoring time alike.
Batches put the P chosen rows first, then the P rejected rows, right-padded (causal attention
never looks at the padding of a right-padded row, so no attention mask is needed).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.errors import UserError
from llmlab.tokenizer.chat import render_chat, render_for_generation, validate

FIELDS = ("prompt", "chosen", "rejected")
TIES = ("tie", "both_bad")  # meta.label values that prefer neither answer


@dataclass
class Preference:
    prompt: list[dict]  # messages ending with a user (or tool) turn
    chosen: list[dict]  # the assistant turn(s) that follow
    rejected: list[dict]
    where: str  # "file:line" or "builtin:TASK#i"
    margin: float | None = None


@dataclass
class PairSeq:
    prompt: list[int]
    chosen: list[int]  # completion tokens only (ending with <|end|>)
    rejected: list[int]
    margin: float = 0.0


def _as_messages(value: object, role: str, name: str) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"empty '{name}'")
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value:
        return value
    raise UserError(f"'{name}' must be a non-empty string or list of messages, got {type(value).__name__}")


def record_to_preference(obj: object, where: str) -> Preference:
    """One JSON record → a validated `Preference` (errors prefixed with `where`)."""
    try:
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {type(obj).__name__}")
        missing = [f for f in FIELDS if f not in obj]
        if missing:
            raise UserError(
                f"missing field '{missing[0]}' (a preference record has prompt, chosen, rejected)"
            )
        prompt = _as_messages(obj["prompt"], "user", "prompt")
        chosen = _as_messages(obj["chosen"], "assistant", "chosen")
        rejected = _as_messages(obj["rejected"], "assistant", "rejected")
        validate(prompt, for_generation=True)
        for name, comp in (("chosen", chosen), ("rejected", rejected)):
            try:
                validate(prompt + comp)
            except UserError as e:
                raise UserError(f"'{name}': {e}") from None
        margin = obj.get("margin")
        if margin is not None and not isinstance(margin, int | float):
            raise UserError(f"'margin' must be a number, got {type(margin).__name__}")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return Preference(prompt, chosen, rejected, where, None if margin is None else float(margin))


def is_tie(obj: object) -> bool:
    """Whether a record's `meta.label` says neither answer is better (a tie, or both bad)."""
    meta = obj.get("meta") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and meta.get("label") in TIES


def read_preferences(path: str | Path, keep_ties: bool = False) -> list[Preference]:
    """All pairs of a JSONL file (ties and both-bad judgements only with `keep_ties`); errors name
    `file:line`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such preference file; pass a .jsonl file or builtin:TASK") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    out, ties = [], 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        pref = record_to_preference(obj, f"{path}:{lineno}")
        if is_tie(obj) and not keep_ties:
            ties += 1
            continue
        out.append(pref)
    if ties:
        why = "dpo.keep_ties / reward.keep_ties = true keeps them"
        print(f"preferences: skipped {ties} tie / both-bad judgements of {path} ({why})", file=sys.stderr)
    if not out:
        raise UserError(
            f"{path}: no preference pairs in the file" + (f" ({ties} ties skipped)" if ties else "")
        )
    return out


def builtin_preferences(task: str, split: str = "train", seed: int = 0) -> list[Preference]:
    """Pairs from a synthetic task: chosen = the answer, rejected = a seeded wrong choice."""
    from llmlab.data import synthetic

    exs = [ex for ex in synthetic.examples(task, split) if len(ex.choices) > 1]
    if not exs:
        raise UserError(f"builtin:{task}: the task has no multiple-choice examples to make pairs from")
    rng = random.Random(f"{task}-{split}-{seed}")
    out = []
    for i, ex in enumerate(exs):
        wrong = rng.choice([c for c in ex.choices if c != ex.answer])
        out.append(
            Preference(
                [{"role": "user", "content": ex.prompt}],
                [{"role": "assistant", "content": ex.answer}],
                [{"role": "assistant", "content": wrong}],
                f"builtin:{task}/{split}#{i}",
            )
        )
    return out


def load_preferences(
    source: str, split: str = "train", seed: int = 0, keep_ties: bool = False
) -> list[Preference]:
    if source.startswith("builtin:"):
        return builtin_preferences(source.split(":", 1)[1], split, seed)
    return read_preferences(source, keep_ties)


def split_pairs(
    source: str, pairs: list[Preference], val_fraction: float, seed: int
) -> tuple[list[Preference], list[Preference]]:
    """(train, val): built-in data validates on its test split; a file holds out a seeded fraction."""
    if source.startswith("builtin:"):
        return pairs, load_preferences(source, "test", seed)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = set(order[: int(len(pairs) * val_fraction)])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def _completion(tok, prompt_ids: list[int], pref: Preference, comp: list[dict], name: str) -> list[int]:
    ids, _ = render_chat(tok, pref.prompt + comp)
    if ids[: len(prompt_ids)] != prompt_ids:  # the template renders a prompt the same either way
        raise UserError(f"{pref.where}: '{name}' does not extend the prompt at the token level")
    return ids[len(prompt_ids) :]


def tokenize_pairs(tok, prefs: list[Preference], max_len: int, verbose: bool = True) -> list[PairSeq]:
    """`PairSeq`s whose prompt + longer completion fit `max_len` tokens; longer pairs are dropped
    (and counted on stderr)."""
    out, dropped = [], 0
    for p in prefs:
        try:
            prompt_ids = render_for_generation(tok, p.prompt)
        except UserError as e:
            raise UserError(f"{p.where}: {e}") from None
        chosen = _completion(tok, prompt_ids, p, p.chosen, "chosen")
        rejected = _completion(tok, prompt_ids, p, p.rejected, "rejected")
        if len(prompt_ids) + max(len(chosen), len(rejected)) > max_len:
            dropped += 1
            continue
        out.append(PairSeq(prompt_ids, chosen, rejected, p.margin or 0.0))
    if dropped and verbose:
        print(f"preferences: dropped {dropped} pairs longer than {max_len} tokens", file=sys.stderr)
    if not out:
        raise UserError(f"no preference pair fits the model's context of {max_len} tokens")
    return out


def pair_batch(pairs: list[PairSeq], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """{"ids" [2P, T], "completion_mask" [2P, T] (1 on completion tokens), "lengths" [2P] (real
    tokens per row), "margin" [P]}: the P chosen rows, then the P rejected rows."""
    rows = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    starts = [len(p.prompt) for p in pairs] * 2
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, starts)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, s : len(r)] = 1
    return {
        "ids": ids,
        "completion_mask": mask,
        "lengths": torch.tensor([len(r) for r in rows]),
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
    }
