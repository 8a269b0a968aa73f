"""The chat page's compare mode in headless Chromium: two answers side by side (two samples of one
model, then two served models), a click (or key 3) records one judgement line the trainers read,
and a reload keeps the page and the verdicts."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

if not (shutil.which("chromium") or shutil.which("chromium-browser")):  # test_browser skips itself then
    pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)", allow_module_level=True)

from llmlab.align.data import read_preferences
from llmlab.serve import create_app

from .conftest import KEY, MODEL, running
from .test_browser import CHROMIUM, SlowLM, playwright_api

expect = playwright_api.expect


@pytest.fixture(scope="module")
def compare_server(model, tok, tmp_path_factory):
    """Replies never end on their own (SlowLM): max_tokens makes every answer 6 non-empty tokens.
    It serves a second model, "other", too."""
    lm = SlowLM(model.cfg).eval()
    lm.load_state_dict(copy.deepcopy(model.state_dict()))
    lm.script, lm.banned = {}, [tok.special_tokens["<|end|>"], tok.special_tokens["<|bos|>"]]
    path = tmp_path_factory.mktemp("page") / "prefs.jsonl"
    other = copy.deepcopy(lm)
    app = create_app(lm, tok, model_name=MODEL, api_key=KEY, max_batch=2, preferences=path,
                     compare={"other": lambda: (other, tok)})  # fmt: skip
    with running(app) as url:
        yield url, path


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_compare_mode_records_judgements_and_survives_a_reload(compare_server):
    url, path = compare_server
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.click("#settings summary")
            for field, value in (("#api-key", KEY), ("#max-tokens", "6"), ("#annotator", "ann")):
                page.fill(field, value)
                page.dispatch_event(field, "change")
            page.check("#compare")
            expect(page.locator("#health")).to_have_text("ready")
            expect(page.locator("#model-name")).to_have_text(MODEL)

            page.fill("#input", "Capital of Norway?")
            page.press("#input", "Enter")
            panes = page.locator(".msg.compare .pane .text")
            expect(panes).to_have_count(2)
            expect(page.locator(".msg.compare .choice.a")).to_be_enabled()  # both answers are in
            a, b = panes.all_text_contents()
            assert a and b
            page.fill(".msg.compare .better", "Oslo.")
            page.click(".msg.compare .choice.a")  # one click: the judgement is recorded
            expect(page.locator(".msg.compare.judged > .text")).to_have_text("Oslo.")
            (line,) = rows(path)
            assert line["chosen"] == "Oslo." and line["rejected"] == b
            assert line["meta"]["label"] == "a" and line["meta"]["original"] == a
            assert line["meta"]["annotator"] == "ann" and line["meta"]["sampling"]["max_tokens"] == 6
            assert line["prompt"] == [{"role": "user", "content": "Capital of Norway?"}]
            (pair,) = read_preferences(path)
            assert pair.chosen == [{"role": "assistant", "content": "Oslo."}]

            page.reload()  # the verdict and compare mode survive; the page still works
            expect(page.locator(".msg.compare.judged > .text")).to_have_text("Oslo.")
            expect(page.locator("#compare")).to_be_checked()
            page.click("#settings summary")
            page.select_option("#compare-model", "other")  # B from the second served model
            page.fill("#input", "And Peru?")
            page.press("#input", "Enter")
            expect(page.locator(".msg.compare:not(.judged) .choice.tie")).to_be_enabled()
            expect(page.locator(".msg.compare:not(.judged) .pane.b .label")).to_have_text("B")  # blind
            page.keyboard.press("3")  # keys 1-4: A, B, tie, both bad
            expect(page.locator(".msg.compare.judged")).to_have_count(2)
            second = rows(path)[1]
            assert second["meta"]["label"] == "tie"
            models = second["meta"]["models"]  # A is either model, at random
            assert {models["chosen"], models["rejected"]} == {MODEL, "other"}
            labels = page.locator(".msg.compare.judged .pane .label").all_text_contents()[2:]
            assert labels == [f"A · {models['chosen']}", f"B · {models['rejected']}"]  # named once judged
            assert second["prompt"][1:] == [
                {"role": "assistant", "content": "Oslo."},
                {"role": "user", "content": "And Peru?"},
            ]  # the conversation went on from the chosen (edited) answer
            assert len(read_preferences(path)) == 1 and len(read_preferences(path, keep_ties=True)) == 2
        finally:
            browser.close()
