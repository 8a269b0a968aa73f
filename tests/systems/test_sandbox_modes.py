"""The sandbox's modes without bubblewrap (loud, never silent) and its bad settings: these run whether
or not bwrap is installed."""

from __future__ import annotations

import pytest

from llmlab.errors import UserError
from llmlab.systems import sandbox
from llmlab.systems.sandbox import run_python


def run(code: str, **kw):
    kw.setdefault("timeout_s", 3.0)
    return run_python(code, **kw)


def test_rlimits_mode_says_so_loudly_and_still_times_out(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_warned", False)
    r = run("while True: pass", sandbox="rlimits", timeout_s=0.5)
    assert r.sandbox == "rlimits" and r.timed_out
    assert "WITHOUT bubblewrap" in capsys.readouterr().err


def test_auto_without_bwrap_falls_back_loudly(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_warned", False)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    r = run("print('hi')")
    assert (r.stdout, r.sandbox) == ("hi\n", "rlimits") and "WARNING" in capsys.readouterr().err
    with pytest.raises(UserError, match="bubblewrap is not installed"):
        run("print(1)", sandbox="bwrap")


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="unknown mode 'docker'"):
        run_python("print(1)", sandbox="docker")
    with pytest.raises(UserError, match="timeout_s > 0"):
        run_python("print(1)", timeout_s=0)
