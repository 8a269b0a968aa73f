"""schemathesis against /openapi.json: generated requests (20 per operation, fixed seed) never make a 500."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test dependency ([dev])")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from .conftest import MODEL  # noqa: E402


def served_model(case):
    """Generated bodies name a random model (a 404 before anything else runs) and, for chat, a random
    conversation (almost always out of turn order: a 400): name ours and a valid conversation, so the
    generated sampling fields reach the engine (with replies of at most 8 tokens; bad values of
    max_tokens are kept). Turn-order errors have their own tests."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = MODEL
        if "messages" in case.body:
            case.body["messages"] = [{"role": "user", "content": "Hi"}]
        for key in ("max_tokens", "max_completion_tokens"):  # short replies keep the test quick
            value = case.body.get(key)
            if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 8):
                case.body[key] = 8
    return case


def test_no_generated_request_makes_a_500(base_url):
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    for operation in operations:

        @given(case=operation.as_strategy().map(served_model))
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case):
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        check()
