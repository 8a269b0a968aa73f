"""The engine loop: a client that leaves frees its rows; an engine failure fails requests, not the loop;
/metrics in Prometheus' format; the tool-call splitter on malformed calls."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import torch

from llmlab.serve import create_app
from llmlab.serve.responses import ToolCallSplitter, split_reply

from .conftest import MODEL, ScriptedLM, running

HI = [{"role": "user", "content": "Hello"}]


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def wait_for(check, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_client_that_leaves_mid_stream_aborts_its_request(base_url):
    aborted = metric(base_url, "llmlab_requests_aborted_total")
    body = {"model": MODEL, "messages": HI, "max_tokens": 480, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    wait_for(lambda: metric(base_url, "llmlab_requests_aborted_total") == aborted + 1, "never aborted")
    wait_for(lambda: metric(base_url, "llmlab_rows_running") == 0, "rows left running")


def test_metrics_are_prometheus_text(base_url):
    httpx.post(base_url + "/v1/chat/completions", json={"model": MODEL, "messages": HI, "max_tokens": 3})
    text = httpx.get(base_url + "/metrics").text
    for name in ("llmlab_requests_running", "llmlab_requests_waiting", "llmlab_kv_cache_bytes"):
        assert f"# TYPE {name} gauge" in text
    assert metric(base_url, "llmlab_generation_tokens_total") >= 3
    assert metric(base_url, "llmlab_time_to_first_token_seconds_count") >= 1
    buckets = [
        float(v)
        for v in re.findall(r'^llmlab_time_per_output_token_seconds_bucket\{le="[^"]+"\} (\S+)$', text, re.M)
    ]
    assert buckets == sorted(buckets) and buckets[-1] == metric(
        base_url, "llmlab_time_per_output_token_seconds_count"
    )
    assert 'llmlab_http_requests_total{route="/v1/chat/completions",status="200"}' in text


class PoisonLM(ScriptedLM):
    """Raises inside the engine's step whenever it reads token POISON at a position >= 4."""

    def forward(self, ids, positions=None, attn_mask=None, cache=None, cache_pos=0, last_only=False):
        pos = positions if positions is not None else cache_pos + torch.arange(ids.shape[1])
        if ((ids == POISON) & (pos >= 4)).any():
            raise RuntimeError("poisoned")
        return super().forward(ids, positions, attn_mask, cache, cache_pos, last_only)


POISON = 7


@pytest.fixture(scope="module")
def poison_url(model, tok):
    m = PoisonLM(model.cfg).eval()
    m.load_state_dict(model.state_dict())
    m.script = {}
    with running(create_app(m, tok, model_name=MODEL, max_batch=4)) as url:
        yield url


def test_an_engine_failure_fails_the_request_not_the_loop(poison_url):
    bad = httpx.post(
        poison_url + "/v1/completions", json={"model": MODEL, "prompt": [1, 2, 3, 4, POISON], "max_tokens": 2}
    )
    assert bad.status_code == 500 and bad.json()["error"]["type"] == "server_error"
    ok = httpx.post(poison_url + "/v1/completions", json={"model": MODEL, "prompt": [1, 2], "max_tokens": 2})
    assert ok.status_code == 200
    # Mid-stream: every sampled token is POISON (logit bias); reading the one at position 4 raises.
    body = {
        "model": MODEL,
        "prompt": [1, 2],
        "max_tokens": 5,
        "stream": True,
        "logit_bias": {str(POISON): 100},
    }
    with httpx.stream("POST", poison_url + "/v1/completions", json=body, timeout=60) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and '"error"' in events[-1] and "[DONE]" not in events[-1]
    assert len(events) > 2  # it failed mid-stream
    assert (
        httpx.post(
            poison_url + "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2}
        ).status_code
        == 200
    )
    assert metric(poison_url, "llmlab_rows_running") == 0


def test_malformed_tool_calls_stay_text():
    bad = '<|tool_call|>{"name": oops}<|/tool_call|> and <|tool_call|>{"name": "f"'
    assert split_reply(bad, "c_") == (bad, [])
    content, calls = split_reply('Hi <|tool_call|>{"name": "f", "arguments": {"x": 1}}<|/tool_call|>', "c_")
    assert content == "Hi " and calls == [
        {"id": "c_0", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]


def test_the_splitter_holds_back_only_a_possible_call_opening():
    s = ToolCallSplitter()
    assert s.push("Hello <|tool") == [("content", "Hello ")]
    assert s.push("s|> ok") == [("content", "<|tools|> ok")]
    assert s.push('<|tool_call|>{"name": "f"}') == []
    assert s.push("<|/tool_call|>") == [("call", {"name": "f", "arguments": "{}"})]
    assert s.push("<|tool_call|>{") == [] and s.finish() == [("content", "<|tool_call|>{")]


def test_sse_events_are_one_line_whatever_the_text():
    from llmlab.serve.streams import sse

    event = sse({"text": "a\u2028b\x85c\nd"})
    assert event.endswith("\n\n") and len(event[:-2].splitlines()) == 1
