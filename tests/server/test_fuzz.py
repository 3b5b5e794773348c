"""Fuzzing: schemathesis generates requests from the live server's /openapi.json, in and out of
the schema. A bounded number of cases per route keeps it in the normal suite. Whatever comes
in, the server answers without a 5xx and is still healthy afterwards."""
import json
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from live_server import running_server

CASES_PER_ROUTE = 25
CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Every route gets cases that follow the schema; routes that take input also get cases that break it.
CASES = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, methods in CONTRACT["paths"].items()
    for method, route in methods.items()
    for mode in ((POSITIVE, NEGATIVE) if route.get("parameters") or route.get("requestBody") else (POSITIVE,))
]


@pytest.fixture(scope="module")
def fuzzed_server(tiny_cache):
    """Its own server: accepted fuzz jobs keep its worker busy, not the shared one's."""
    with running_server(cache_dir=tiny_cache) as live:
        yield live


@pytest.fixture(scope="module")
def operations(fuzzed_server):
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    return {(operation.method.upper(), operation.path): operation for operation in found}


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_request_gets_a_server_error(operations, method, path, mode):
    """Positive cases follow the schema (accepted jobs included); negative ones break it."""
    operation = operations[(method, path)]

    @given(data=st.data())
    @settings(max_examples=CASES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(data):
        case = data.draw(operation.as_strategy(mode))
        case.call_and_validate(checks=[not_a_server_error], timeout=30)

    fuzz()


def test_the_server_is_healthy_after_the_fuzzing(fuzzed_server):
    assert httpx.get(f"{fuzzed_server.url}/health", timeout=10).json()["status"] == "ok"
    assert fuzzed_server.process.poll() is None
