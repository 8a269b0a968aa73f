"""Load: 32 concurrent streaming clients × 4 requests each finish with no error and well-formed streams;
8 clients that leave mid-stream leave no running rows behind."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from llmlab.serve import create_app

from .conftest import MODEL, running
from .test_loop import metric, wait_for

CLIENTS, REQUESTS, LEAVERS = 32, 4, 8


@pytest.fixture(scope="module")
def load_url(model, tok):
    with running(create_app(model, tok, model_name=MODEL, max_batch=32)) as url:
        yield url


def check_stream(lines: list[str], n: int) -> int:
    """Assert one chat stream is well formed; returns its completion tokens (from the usage chunk)."""
    events = [line.removeprefix("data: ") for line in lines if line]
    assert all(line.startswith("data: ") for line in lines if line)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"].get("role") for c in chunks[:n]] == ["assistant"] * n
    finished = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(finished) == list(range(n))
    assert chunks[-1]["choices"] == []
    return chunks[-1]["usage"]["completion_tokens"]


async def client_session(http: httpx.AsyncClient, url: str, k: int) -> list[int]:
    tokens = []
    for r in range(REQUESTS):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"client {k} request {r}"}],
            "max_tokens": 12,
            "seed": k * REQUESTS + r,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            tokens.append(check_stream([line async for line in resp.aiter_lines()], 1))
    return tokens


async def leave_mid_stream(http: httpx.AsyncClient, url: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 480,
        "ignore_eos": True,
        "stream": True,
    }
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        seen = 0
        async for line in resp.aiter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                return  # closing the response drops the connection


def test_32_streaming_clients_then_8_that_leave(load_url):
    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            done = await asyncio.gather(*[client_session(http, load_url, k) for k in range(CLIENTS)])
        # fresh connections for the leavers: closing a stream mid-way closes its connection
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await asyncio.gather(*[leave_mid_stream(http, load_url) for _ in range(LEAVERS)])
        return done

    aborted = metric(load_url, "llmlab_requests_aborted_total")
    tokens = asyncio.run(main())
    assert len(tokens) == CLIENTS and all(len(t) == REQUESTS and all(0 <= x <= 12 for x in t) for t in tokens)
    wait_for(
        lambda: metric(load_url, "llmlab_requests_aborted_total") == aborted + LEAVERS, "not all aborted"
    )
    wait_for(lambda: metric(load_url, "llmlab_rows_running") == 0, "rows left running")
    assert (
        metric(load_url, "llmlab_requests_running") == 0 and metric(load_url, "llmlab_requests_waiting") == 0
    )
