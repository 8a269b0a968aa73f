"""Every CLI flag that takes a number or a device validates it while parsing (llmlab.cli.argtypes),
and a bad value is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse

import pytest

from llmlab.cli import argtypes, build_parser, main


def all_actions() -> list[tuple[str, argparse.Action]]:
    """(command path, action) for every option of every (sub)command."""
    found, todo = [], [("llmlab", build_parser())]
    while todo:
        path, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{path} {name}", sub) for name, sub in action.choices.items()]
            else:
                found.append((path, action))
    return found


def takes_a_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, argparse._HelpAction | argparse._VersionAction)


def looks_numeric(action: argparse.Action) -> bool:
    default = action.default
    return action.type in (int, float) or (
        isinstance(default, int | float) and not isinstance(default, bool) and takes_a_value(action)
    )


def test_the_walk_sees_the_flags():
    names = {opt for _, a in all_actions() for opt in a.option_strings}
    assert {"--limit", "--top-p", "--flops", "--vocab-size", "--device"} <= names


def test_every_numeric_flag_uses_a_validating_type():
    bare = [
        f"{path} {'/'.join(a.option_strings) or a.dest} (type {getattr(a.type, '__name__', a.type)})"
        for path, a in all_actions()
        if looks_numeric(a) and a.type not in argtypes.NUMERIC
    ]
    assert bare == [], "numeric flags without an llmlab.cli.argtypes type"


def test_every_device_flag_is_checked():
    flags = [(path, a) for path, a in all_actions() if a.dest == "device"]
    assert flags and all(a.type is argtypes.device for _, a in flags)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["eval", "--model", "m", "--task", "capitals", "--limit", "0"],
            "--limit: must be an integer >= 1, got '0'",
        ),
        (
            ["eval", "--model", "m", "--task", "capitals", "--limit", "-1"],
            "--limit: must be an integer >= 1, got '-1'",
        ),
        (
            ["eval", "--model", "m", "--text", "t", "--max-tokens", "x"],
            "--max-tokens: must be an integer >= 1",
        ),
        (["eval", "--model", "m", "--shots", "1,-2"], "--shots: must be comma-separated integers >= 0"),
        (
            ["generate", "--model", "m", "--prompt", "p", "--device", "foo"],
            "--device: must be one of auto, cpu",
        ),
        (["generate", "--model", "m", "--prompt", "p", "--top-k", "-1"], "--top-k: must be an integer >= 0"),
        (
            ["generate", "--model", "m", "--prompt", "p", "--min-p", "2"],
            "--min-p: must be a number in [0, 1]",
        ),
        (
            ["generate", "--model", "m", "--prompt", "p", "--temperature", "nan"],
            "--temperature: must be a number >= 0",
        ),
        (
            ["generate", "--model", "m", "--prompt", "p", "--num-draft", "0"],
            "--num-draft: must be an integer >= 1",
        ),
        (
            ["chat", "--model", "m", "--device", "gpu"],
            "--device: must be one of auto, cpu, cuda, mps, got 'gpu'",
        ),
        (
            ["tokenizer", "train", "--input", "x", "--out", "o", "--vocab-size", "-3"],
            "--vocab-size: must be an integer",
        ),
        (["scaling", "plan", "--fit", "f", "--flops", "0"], "--flops: must be a number > 0, got '0'"),
        (
            ["scaling", "fit", "--data", "d", "--bootstrap", "-1"],
            "--bootstrap: must be an integer >= 0, got '-1'",
        ),
    ],
)
def test_bad_flag_is_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_help_still_exits_0(capsys):
    assert main(["eval", "--help"]) == 0
    assert "--limit" in capsys.readouterr().out
