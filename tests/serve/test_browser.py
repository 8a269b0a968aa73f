"""The chat page in headless Chromium (Debian's `chromium`, driven by playwright): type, watch the reply
stream in, stop it, reload and find the conversation again; model text is shown as text, never HTML."""

from __future__ import annotations

import copy
import shutil
import time

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency ([dev])")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)", allow_module_level=True)

from llmlab.serve import create_app  # noqa: E402

from .conftest import KEY, MODEL, ScriptedLM, running  # noqa: E402


class SlowLM(ScriptedLM):
    """~20 ms a step and never a stop token: a reply keeps streaming until the user stops it."""

    def forward(self, *args, **kw):
        time.sleep(0.02)
        logits = super().forward(*args, **kw)
        logits[..., self.banned] = -1e9
        return logits


@pytest.fixture(scope="module")
def page_url(model, tok):
    slow = SlowLM(model.cfg).eval()
    slow.load_state_dict(copy.deepcopy(model.state_dict()))
    slow.script, slow.banned = {}, [tok.special_tokens["<|end|>"], tok.special_tokens["<|bos|>"]]
    with running(create_app(slow, tok, model_name=MODEL, api_key=KEY, max_batch=2)) as url:
        yield url


def test_chat_page_streams_stops_and_keeps_history(page_url, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url + "/")
            page.click("#settings summary")
            page.fill("#api-key", KEY)
            page.dispatch_event("#api-key", "change")
            page.fill("#max-tokens", "400")
            page.dispatch_event("#max-tokens", "change")
            playwright_api.expect(page.locator("#health")).to_have_text("ready")
            playwright_api.expect(page.locator("#model-name")).to_have_text(MODEL)

            page.fill("#input", "<b>Hello</b> king")
            page.press("#input", "Enter")  # Enter sends (Shift+Enter would be a new line)
            user = page.locator(".msg.user .text").first
            playwright_api.expect(user).to_have_text("<b>Hello</b> king")  # shown as text
            assert page.locator(".msg.user b").count() == 0
            reply = page.locator(".msg.assistant .text").last
            playwright_api.expect(reply).not_to_have_text("")  # tokens streamed in
            playwright_api.expect(page.locator("#stop")).to_be_enabled()
            page.click("#stop")
            playwright_api.expect(page.locator("#stop")).to_be_disabled()
            stopped = page.locator(".msg.assistant .text").last.text_content()
            assert stopped and "[error" not in stopped

            page.reload()
            playwright_api.expect(page.locator(".msg.user .text").first).to_have_text("<b>Hello</b> king")
            playwright_api.expect(page.locator(".msg.assistant .text").last).to_have_text(stopped)
            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
            assert (tmp_path / "chat.png").stat().st_size > 0

            # Edit the user turn: the reply after it is regenerated from the new text.
            page.once("dialog", lambda d: d.accept("Second try"))
            page.click(".msg.user .edit")
            playwright_api.expect(page.locator(".msg.user .text")).to_have_text(["Second try"])
            playwright_api.expect(page.locator("#stop")).to_be_enabled()
            page.click("#stop")
            playwright_api.expect(page.locator(".msg")).to_have_count(2)
            page.click("#new-chat")  # a new, empty conversation; the old one stays in the list
            playwright_api.expect(page.locator(".msg")).to_have_count(0)
            playwright_api.expect(page.locator("#chats li")).to_have_count(2)
        finally:
            browser.close()
