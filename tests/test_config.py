"""Recipe keys are validated at the boundary: every key of every section has a declared rule, and a
bad value is one line naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from llmlab.config import RULES, SCHEDULES, Recipe, check_section, derive_seeds, load_recipe
from llmlab.errors import UserError


def sections() -> list[tuple[str, type]]:
    hints = typing.get_type_hints(Recipe)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(Recipe)]


@pytest.mark.parametrize(("name", "cls"), sections())
def test_every_recipe_key_has_a_declared_rule(name, cls):
    """A new key must say what it allows (or `free(why)`); a rule for a key that is gone is stale."""
    fields = [f.name for f in dataclasses.fields(cls)]
    assert cls in RULES, f"[{name}] has no rules in llmlab.config.RULES"
    assert [f for f in fields if f not in RULES[cls]] == [], f"[{name}] keys without a rule"
    assert [k for k in RULES[cls] if k not in fields] == [], f"[{name}] rules for keys that do not exist"
    check_section(cls(), f"{name}.")  # the defaults are allowed values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-1", "recipe key train.lr: must be > 0, got -1.0"),
        ("train.lr=nan", "recipe key train.lr: must be > 0, got nan"),
        ("train.log_every=0", "recipe key train.log_every: must be >= 1, got 0"),
        ("train.eval_every=-1", "recipe key train.eval_every: must be >= 0 (0 = only at the end), got -1"),
        ("train.warmup=-5", "recipe key train.warmup: must be >= 0, got -5"),
        ("train.steps=0", "recipe key train.steps: must be >= 1, got 0"),
        ("train.grad_clip=-1", "recipe key train.grad_clip: must be >= 0 (0 = no clipping), got -1.0"),
        (
            "train.schedule=linear",
            "recipe key train.schedule: must be one of cosine, wsd, constant, got 'linear'",
        ),
        (
            "train.dtype=fp16",
            "recipe key train.dtype: must be one of auto, float32, fp32, bfloat16, bf16, got 'fp16'",
        ),
        ("train.device=foo", "recipe key train.device: must be one of auto, cpu, cuda, mps, got 'foo'"),
        ("train.distributed=zero", "recipe key train.distributed: must be one of ddp, fsdp, got 'zero'"),
        ("sft.batch_size=0", "recipe key sft.batch_size: must be >= 1, got 0"),
        (
            "midtrain.copy_tasks=-1",
            "recipe key midtrain.copy_tasks: must be >= 0 (0 = as many as questions), got -1",
        ),
        ("sft.epochs=0", "recipe key sft.epochs: must be > 0, got 0.0"),
        ("sft.truncate=cut", "recipe key sft.truncate: must be one of warn, drop, error, got 'cut'"),
        ("sft.val_fraction=1", "recipe key sft.val_fraction: must be in [0, 1), got 1.0"),
        ("model.preset=huge", "recipe key model.preset: must be one of tiny, small, gpt2-124m, got 'huge'"),
        ("model.n_layer=-1", "recipe key model.n_layer: must be >= 0 (0 = the preset's value), got -1"),
        ("model.dropout=1.5", "recipe key model.dropout: must be in [0, 1), or left out, got 1.5"),
        (
            "data.pattern=gpt5",
            "recipe key data.pattern: must be gpt4, gpt2, digits, names or a valid regex, got 'gpt5'",
        ),
        (
            "data.vocab_size=100",
            "recipe key data.vocab_size: must be >= 266 (256 bytes + the special tokens)",
        ),
        ("speedrun.shots=[0, -1]", "recipe key speedrun.shots: must be a list, each item >= 0, got [0, -1]"),
        (
            "data.induction_context=[32, 4]",
            "recipe key data.induction_context: must be >= 8, or a non-empty list of such, got [32, 4]",
        ),
        ("speedrun.eval_limit=0", "recipe key speedrun.eval_limit: must be >= 1, got 0"),
        ("speedrun.temperature=-0.5", "recipe key speedrun.temperature: must be >= 0 (0 = greedy), got -0.5"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(override, message):
    with pytest.raises(UserError) as e:
        load_recipe(None, [override])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override",
    [
        "train.eval_every=0",  # only at the end, as sft.eval_every = 0
        "train.save_every=0",
        "train.grad_clip=0",
        "train.threads=0",
        "sft.steps=0",  # from epochs
        "sft.row_len=0",
        "model.n_layer=0",  # the preset's
        "model.vocab_size=0",  # the tokenizer's
        "data.val_fraction=0",
        'data.pattern="\\\\w+|\\\\s+"',  # a custom regex
    ],
)
def test_zeros_that_mean_a_default_are_allowed(override):
    load_recipe(None, [override])


def test_sweep_specs_check_their_recipe_sections_too(tmp_path):
    from llmlab.scaling import load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text("[sweep]\ndepths = [1, 2]\nbudgets = [1e9, 3e9]\n")
    with pytest.raises(UserError, match=r"recipe key train\.lr: must be > 0"):
        load_spec(spec, ["train.lr=0"])


def test_schedule_choices_match_the_optimizer():
    from llmlab.train.optim import SCHEDULES as OPTIM_SCHEDULES

    assert SCHEDULES == OPTIM_SCHEDULES


STAGE_SEEDS = ("train", "midtrain", "sft", "reward", "dpo", "rlhf", "grpo")


def stage_seeds(recipe) -> list[int]:
    return [getattr(recipe, s).seed for s in STAGE_SEEDS]


def test_stage_seeds_derive_from_the_run_seed():
    """Seed of stage k = speedrun.seed + k: the default N = 1337 keeps train.seed = 1337, and one
    --set moves every stage; [align] seed (the frontier sweep) is not derived."""
    assert stage_seeds(load_recipe(None)) == [1337, 1338, 1339, 1340, 1341, 1342, 1343]
    r = load_recipe(None, ["speedrun.seed=5"])
    assert r.speedrun.seed == 5 and stage_seeds(r) == [5, 6, 7, 8, 9, 10, 11]
    assert r.align.seed == 1337
    assert derive_seeds({"speedrun": {"seed": 2}, "sft": {"seed": 0}}) == {
        "speedrun": {"seed": 2},
        "sft": {"seed": 0},
        **{s: {"seed": 2 + k} for k, s in enumerate(STAGE_SEEDS) if s != "sft"},
    }


def test_an_explicit_stage_seed_wins(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text("[speedrun]\nseed = 5\n\n[sft]\nseed = 7\n")
    assert stage_seeds(load_recipe(path)) == [5, 6, 7, 8, 9, 10, 11]
    r = load_recipe(path, ["dpo.seed=99", "speedrun.seed=0"])  # the order of the --set's does not matter
    assert stage_seeds(r) == [0, 1, 7, 3, 99, 5, 6]
    assert stage_seeds(load_recipe(None, ["sft.seed=3"])) == [1337, 1338, 3, 1340, 1341, 1342, 1343]


def test_a_bad_run_seed_is_named_as_itself():
    with pytest.raises(UserError, match=r"^recipe key speedrun\.seed: must be >= 0, got -1"):
        load_recipe(None, ["train.steps=5", "speedrun.seed=-1"])
    with pytest.raises(UserError, match=r"^recipe key speedrun\.seed: expected an integer"):
        load_recipe(None, ["speedrun.seed=1.5"])


def test_seed_flag_is_the_runs_seed(tmp_path):
    """`llmlab speedrun --seed N` = --set speedrun.seed=N as the last override: every stage's seed
    derives from it (after a --set of speedrun.seed too), and a recipe's own sft.seed still wins."""
    from llmlab.cli import build_parser
    from llmlab.cli.speedrun import recipe_from_args

    path = tmp_path / "recipe.toml"
    path.write_text("[sft]\nseed = 7\n")
    argv = ["speedrun", "--recipe", str(path), "--set", "speedrun.seed=9"]
    r = recipe_from_args(build_parser().parse_args([*argv, "--seed", "5"]))
    assert r.speedrun.seed == 5
    assert [r.train.seed, r.midtrain.seed, r.sft.seed, r.reward.seed, r.grpo.seed] == [5, 6, 7, 8, 11]
    r = recipe_from_args(build_parser().parse_args(argv))
    assert [r.speedrun.seed, r.train.seed, r.sft.seed] == [9, 9, 7]
