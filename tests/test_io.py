"""TOML in and out: a resolved recipe written by `write_toml` reads back as the same recipe."""

from pathlib import Path

import pytest

from llmlab.config import load_recipe, to_dict
from llmlab.errors import UserError
from llmlab.io import read_toml, write_toml

RECIPES = sorted(Path(__file__).parents[1].joinpath("recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_resolved_recipe_round_trips_through_toml(path, tmp_path):
    resolved = to_dict(load_recipe(path))
    write_toml(tmp_path / "recipe.toml", resolved)
    assert read_toml(tmp_path / "recipe.toml") == resolved
    assert to_dict(load_recipe(tmp_path / "recipe.toml")) == resolved


def test_strings_with_quotes_newlines_and_backslashes_round_trip(tmp_path):
    data = {"speedrun": {"chat_prompts": ['Say "hi"\nthen stop', "C:\\path\ttab", "naïve é"]}}
    write_toml(tmp_path / "r.toml", data)
    assert read_toml(tmp_path / "r.toml") == data


def test_read_toml_names_the_file_and_the_fault(tmp_path):
    with pytest.raises(UserError, match="no such recipe file"):
        read_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nlr = 1\n")
    with pytest.raises(UserError, match=r"bad\.toml: malformed TOML"):
        read_toml(tmp_path / "bad.toml")
