"""Property-based fuzzing of the ``http`` service from its own OpenAPI document (schemathesis).

Bounded in count (``max_examples`` per operation) and time (pytest-timeout), on
127.0.0.1 only. The property: no request, however odd, gets a 5xx or takes the
server down.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from _http_support import Running, echo_service
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def service() -> Iterator[Running]:
    # open-sources=false: a fuzzed rtsp://1.2.3.4 would otherwise wait on a network timeout.
    with echo_service({"open-sources": False, "request-timeout": 5, "fetch-timeout": 2}) as (running, _):
        yield running


@pytest.fixture(scope="module")
def api_schema(service: Running) -> Any:
    document = httpx.get(service.url + "/openapi.json").json()
    # Endless streams (SSE, MJPEG live views) never finish a response; their own tests read them.
    endless = ("text/event-stream", "multipart/x-mixed-replace")
    for path, ops in list(document["paths"].items()):
        success = ops.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
        if success and all(t.startswith(endless) for t in success):
            del ops["get"]
            if not ops:
                del document["paths"][path]
    return schemathesis.from_dict(document, base_url=service.url)


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_request_gets_a_server_error(case: Any, service: Running) -> None:
    response = case.call(timeout=15)
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert "Traceback" not in response.text
        if case.path.startswith("/v1/") and isinstance(body, dict) and "error" in body:
            assert {"message", "type", "param", "code"} <= set(body["error"])
    assert httpx.get(service.url + "/health", timeout=5).status_code == 200


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_answer_matches_the_documented_contract(case: Any, service: Running) -> None:
    """``--checks all``: status codes, content types, headers and bodies as /openapi.json declares them."""
    case.call_and_validate(timeout=15)
