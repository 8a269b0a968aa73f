"""Recipes: TOML files that configure a run, with `--set section.key=value` overrides.

A recipe is a nested dataclass (`Recipe`), one dataclass per TOML section. Loading is strict: an
unknown section or key is a `UserError` that lists the valid ones, and a value of the wrong type is
named by its dotted key. Every key's allowed values (range, choices) are declared once, in `RULES`
below, and checked when a recipe is loaded: `recipe key train.lr: must be > 0, got -1.0`. Every
stage reads only its own section; a new key needs a rule (a test walks every field), even if the
rule is `free(...)`, which says why anything goes. Each training stage's `seed` not given explicitly
derives from the run's seed, `speedrun.seed` (`derive_seeds`).

    recipe = load_recipe("recipes/shakespeare-cpu.toml", overrides=["train.steps=100", "model.preset=tiny"])
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from llmlab.align.config import AlignSection, DPOSection, GRPOSection, RewardSection, RLHFSection
from llmlab.align.config import align_rules as _align_rules
from llmlab.errors import UserError
from llmlab.io import read_toml
from llmlab.rules import (
    BOOL,
    OPTIMIZERS,
    SCHEDULES,
    SEED,
    Rule,
    above,
    at_least,
    each,
    fine_tuning_rules,
    fraction,
    free,
    is_number,
    one_of,
    one_or_each,
    optional,
)


@dataclass
class DataSection:
    """Where pretraining text comes from and which tokenizer encodes it."""

    source: str | list[str] = "shakespeare"  # built-in corpus name or path (file, folder, .jsonl), or a list
    tokenizer: str = ""  # path to a tokenizer.json; "" = train one on `source` with `vocab_size`
    vocab_size: int = 4096  # for a tokenizer trained by the run
    pattern: str = "gpt4"  # split pattern for a tokenizer trained by the run
    val_fraction: float = 0.05  # documents held out for validation
    tokenizer_sample: int = 0  # midtraining conversations whose text the tokenizer also learns from
    # at most N first steps on span-pair rows until their held-out loss < goal (train/induction_phase.py)
    induction_steps: int = 0
    induction_goal: float = 0.5
    induction_every: int = 0  # k; 0 = none
    induction_context: int | list[int] = 32  # their row length, or lengths taken in turn step by step


@dataclass
class ModelSection:
    """Model shape: a preset, with any field overridden. 0 / "" means "take the preset's value"."""

    preset: str = "tiny"
    n_layer: int = 0
    d_model: int = 0
    n_head: int = 0
    n_kv_head: int = 0
    d_ff: int = 0
    context: int = 0
    vocab_size: int = 0
    tie_embeddings: bool | None = None
    qk_norm: bool | None = None
    dropout: float | None = None


@dataclass
class TrainSection:
    """The one training loop's settings (pretraining; SFT replaces some of them in [sft])."""

    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    schedule: str = "cosine"  # cosine | wsd | constant
    weight_decay: float = 0.1
    optimizer: str = "adamw"  # adamw | muon (Muon for the hidden matrices, AdamW for the rest)
    muon_lr: float = 0.02  # the Muon matrices' peak lr (the schedule scales it as it scales lr)
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping
    seed: int = 1337
    eval_every: int = 100  # 0 = only at the end (as sft.eval_every)
    eval_batches: int = 20
    save_every: int = 250  # 0 = only at the end
    log_every: int = 10  # >= 1
    compile: bool = False
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16
    device: str = "auto"  # auto | cpu | cuda | mps
    distributed: str = "ddp"  # ddp | fsdp (under torchrun)
    sample_every: int = 0  # print a sample every N steps (0 = only at the end)
    threads: int = 0  # CPU threads for torch (0 = torch's default, one per core)


@dataclass
class SpeedrunSection:
    """What `llmlab speedrun` runs around the other sections: which stages, evals and samples."""

    skip: list[str] = field(default_factory=list)  # stage names to leave out, e.g. ["sft", "chat_eval"]
    scaling: bool = False  # run the scaling mini-sweep, fit and forecast (slow; off in the quick default)
    scaling_spec: str = "recipes/scaling/cpu-mini.toml"  # the sweep spec the scaling stage runs
    eval_tasks: list[str] = field(default_factory=list)  # ICL tasks ([] = the eval module's built-ins)
    shots: list[int] = field(default_factory=lambda: [0, 1, 4])  # k for the base model's k-shot evals
    eval_limit: int = 100  # held-out examples per task
    compression_bytes: int = 1_000_000  # bytes of corpus text on which tokenizer compression is measured
    base_prompts: list[str] = field(default_factory=lambda: ["ROMEO:", "To be, or not to be,"])
    chat_prompts: list[str] = field(default_factory=lambda: ["Work out 7 + 5.", "Spell the word house."])
    max_new_tokens: int = 80
    temperature: float = 0.8
    top_k: int = 50
    seed: int = 1337  # the run's seed N: training stages get N + k (derive_seeds); samples, few-shot picks


@dataclass
class SFTSection:
    """Supervised fine-tuning (`llmlab sft`): data and the [train] settings SFT replaces. Device,
    dtype, grad_clip, compile and logging come from [train]."""

    data: str = "builtin:mix"  # a .jsonl file, a folder of them, or builtin:NAME (a synthetic task or mix)
    steps: int = 0  # optimizer steps; 0 = epochs × steps per epoch
    epochs: float = 3.0
    batch_size: int = 16  # rows per step (a row packs several conversations when pack = true)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    schedule: str = "cosine"
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw | muon, as train.optimizer
    muon_lr: float = 0.02
    pack: bool = True  # pack conversations into rows (document-masked attention) instead of padding
    row_len: int = 0  # tokens per packed row; 0 = the model's context
    micro_batches: int = 1  # a step's rows by length in this many micro-batches: less padding, same gradient
    truncate: str = "warn"  # a conversation longer than the context: warn (cut), drop, or error
    val_fraction: float = 0.05  # conversations held out for val loss (built-in data: its test split)
    eval_every: int = 0  # 0 = only at the end
    seed: int = 1337


@dataclass
class MidtrainSection(SFTSection):
    """Midtraining (`llmlab midtrain`, between pretraining and SFT): SFT's loss and settings on many
    generated conversations (llmlab.data.midtrain), the families weighted as given."""

    enabled: bool = False  # the speedrun's midtrain stage; off = SFT starts from the base model
    data: str = "builtin:midtrain"
    conversations: int = 20000  # generated conversations (each on new content)
    tool_use: float = 1.0  # the families' weights
    grounded: float = 1.0
    copying: float = 1.0
    agent: float = 1.0
    questions: int = 1  # per tool-use, grounded or copying conversation (schema / sources paid for once)
    copy_tasks: int = 0  # per copying conversation instead (they are short); 0 = questions
    grounded_questions: int = 0  # per grounded conversation instead; 0 = questions
    max_steps: int = 0  # > steps: run on while the calculator call has not formed (train/call_watch.py)
    call_goal: float = 0.9  # calls right on dev questions that counts as formed
    epochs: float = 1.0
    val_fraction: float = 0.01


@dataclass
class Recipe:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    speedrun: SpeedrunSection = field(default_factory=SpeedrunSection)
    sft: SFTSection = field(default_factory=SFTSection)
    midtrain: MidtrainSection = field(default_factory=MidtrainSection)
    reward: RewardSection = field(default_factory=RewardSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    rlhf: RLHFSection = field(default_factory=RLHFSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    align: AlignSection = field(default_factory=AlignSection)


# ---- what each recipe key allows ----------------------------------------------------------------


def _presets() -> dict:
    from llmlab.model.config import PRESETS

    return PRESETS


def _min_vocab() -> int:
    from llmlab.tokenizer import DEFAULT_SPECIAL_TOKENS

    return 256 + len(DEFAULT_SPECIAL_TOKENS)


def _is_pattern(v: str) -> bool:
    from llmlab.tokenizer.bpe import resolve_pattern

    try:
        resolve_pattern(v)
    except UserError:
        return False
    return True


# Every field of every recipe section, and what it allows (tests/test_config.py checks that none is
# missing). Types are checked first, by `from_dict`; these rules then check ranges and choices.
RULES: dict[type, dict[str, Rule]] = {
    DataSection: {
        "source": free("a corpus name or path; read (and checked) when the run loads it"),
        "tokenizer": free('a tokenizer.json path or ""; checked when the run loads it'),
        "vocab_size": Rule(
            lambda v: is_number(v) and v >= _min_vocab(),
            lambda: f">= {_min_vocab()} (256 bytes + the special tokens)",
        ),
        "pattern": Rule(_is_pattern, lambda: "gpt4, gpt2, digits, names or a valid regex"),
        "val_fraction": fraction(),
        "tokenizer_sample": at_least(0, "0 = the corpus alone"),
        "induction_steps": at_least(0, "0 = the corpus from the first step"),
        "induction_context": one_or_each(at_least(8)),
        "induction_goal": above(0),
        "induction_every": at_least(0, "0 = no induction rows after the phase"),
    },
    ModelSection: {
        "preset": one_of(_presets),
        **{
            k: at_least(0, "0 = the preset's value")
            for k in ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "context")
        },
        "vocab_size": at_least(0, "0 = the tokenizer's"),
        "tie_embeddings": optional(BOOL),
        "qk_norm": optional(BOOL),
        "dropout": optional(fraction()),
    },
    TrainSection: {
        "steps": at_least(1),
        "batch_size": at_least(1),
        "grad_accum": at_least(1),
        "lr": above(0),
        "min_lr": at_least(0),
        "warmup": at_least(0),
        "schedule": one_of(SCHEDULES),
        "weight_decay": at_least(0),
        "optimizer": one_of(OPTIMIZERS),
        "muon_lr": above(0),
        "grad_clip": at_least(0, "0 = no clipping"),
        "seed": SEED,
        "eval_every": at_least(0, "0 = only at the end"),
        "eval_batches": at_least(1),
        "save_every": at_least(0, "0 = only at the end"),
        "log_every": at_least(1),
        "compile": BOOL,
        "dtype": one_of(("auto", "float32", "fp32", "bfloat16", "bf16")),
        "device": one_of(("auto", "cpu", "cuda", "mps")),
        "distributed": one_of(("ddp", "fsdp")),
        "sample_every": at_least(0, "0 = only at the end"),
        "threads": at_least(0, "0 = torch's default"),
    },
    SpeedrunSection: {
        "skip": free("stage names; checked against the speedrun's stages when it starts"),
        "scaling": BOOL,
        "scaling_spec": free("a sweep spec path; read when the scaling stage runs"),
        "eval_tasks": free("task names or .jsonl files; checked when the eval stage loads them"),
        "shots": each(at_least(0)),
        "eval_limit": at_least(1),
        "compression_bytes": at_least(1),
        "base_prompts": free("any text"),
        "chat_prompts": free("any text"),
        "max_new_tokens": at_least(0),
        "temperature": at_least(0, "0 = greedy"),
        "top_k": at_least(0, "0 = off"),
        "seed": SEED,
    },
    SFTSection: {
        "data": free("a .jsonl file, a folder or builtin:NAME; checked when SFT loads it"),
        **fine_tuning_rules(),
        "optimizer": one_of(OPTIMIZERS),
        "muon_lr": above(0),
        "pack": BOOL,
        "row_len": at_least(0, "0 = the model's context"),
        "micro_batches": at_least(1, "1 = the whole batch at once"),
        "truncate": one_of(("warn", "drop", "error")),
        "eval_every": at_least(0, "0 = only at the end"),
    },
}
RULES[MidtrainSection] = {
    **RULES[SFTSection],
    "enabled": BOOL,
    "data": free("builtin:midtrain (generated) or what sft.data takes"),
    "conversations": at_least(1),
    "questions": at_least(1),
    "copy_tasks": at_least(0, "0 = as many as questions"),
    "grounded_questions": at_least(0, "0 = as many as questions"),
    "max_steps": at_least(0, "0 (or <= steps) = exactly midtrain.steps, no watch"),
    "call_goal": Rule(lambda v: is_number(v) and 0 < v <= 1, lambda: "in (0, 1]"),
    **{k: at_least(0, "0 = leave the family out") for k in ("tool_use", "grounded", "copying", "agent")},
}

RULES.update(_align_rules())


def check_section(section: Any, prefix: str = "") -> None:
    """Check every field of a recipe section against its rule (sections without rules pass)."""
    rules = RULES.get(type(section), {}) if dataclasses.is_dataclass(section) else {}
    for f in dataclasses.fields(section) if rules else ():
        rules[f.name].check(f"{prefix}{f.name}", getattr(section, f.name))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a TOML value to the dataclass field's type (int→float allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:
            try:
                return _coerce(value, a, key)
            except UserError:
                continue
        raise UserError(
            f"recipe key {key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}"
        )
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise UserError(f"recipe key {key}: expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise UserError(f"recipe key {key}: expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"recipe key {key}: expected an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise UserError(f"recipe key {key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, strictly (unknown keys are errors)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(f"{prefix}{k}" for k in fields)
            raise UserError(f"unknown recipe key '{dotted}'; valid keys: {valid}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise UserError(f"recipe key {dotted}: expected a [{dotted}] section")
            kwargs[key] = from_dict(tp, value, prefix=f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    section = cls(**kwargs)
    check_section(section, prefix)
    return section


def to_dict(obj: Any) -> dict[str, Any]:
    """The resolved recipe as a nested dict (None values dropped, since TOML has no null)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        return x

    return clean(dataclasses.asdict(obj))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` → (["a", "b"], value). The value is parsed as TOML (numbers, booleans, lists,
    quoted strings); anything that does not parse is taken as a bare string."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for text in overrides or []:
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


# The run's seed N is `speedrun.seed`; the seed of the stage at offset k is N + k (`derive_seeds`).
# A stage's offset never changes, so adding a stage does not move the others' seeds.
SEED_OFFSETS: dict[str, int] = dict(train=0, midtrain=1, sft=2, reward=3, dpo=4, rlhf=5, grpo=6)


def derive_seeds(data: dict[str, Any]) -> dict[str, Any]:
    """Give every training stage in SEED_OFFSETS the seed N + k, N = speedrun.seed (default 1337, so
    train.seed stays 1337): one number changes every stage's draws, and no two derived seeds are the
    same (SFT's generated conversations are not midtraining's). A stage whose `seed` the recipe
    or a `--set` gives explicitly keeps it. `[align] seed` (the frontier sweep) is not derived.

    `data` is the raw recipe dict after overrides, filled in place and returned. A speedrun.seed
    that is not an integer >= 0 derives nothing, so validation names speedrun.seed itself."""
    run = data.get("speedrun")
    n = run.get("seed", SpeedrunSection.seed) if isinstance(run, dict) else SpeedrunSection.seed
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        return data
    for name, k in SEED_OFFSETS.items():
        section = data.setdefault(name, {})
        if isinstance(section, dict):  # anything else is from_dict's error to report
            section.setdefault("seed", n + k)
    return data


def load_recipe(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, cls: type = Recipe
) -> Any:
    """Read a TOML recipe (or start from defaults when `path` is None), apply `--set` overrides,
    derive the stages' seeds from speedrun.seed (`derive_seeds`, for a `Recipe`), and validate into
    the dataclass `cls`."""
    data = read_toml(path) if path else {}
    data = apply_overrides(data, overrides)
    if cls is Recipe:
        data = derive_seeds(data)
    return from_dict(cls, data)
