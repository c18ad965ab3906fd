"""Request validation of the HTTP functions, with real ``func.HttpRequest`` objects.

Every case here is refused before any registry or storage is reached, so the runtime
only needs its settings; the accepted paths run against real registries and Azurite in
``tests/integration/test_reconcile.py``.
"""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from replicator.app.api import (
    MAX_BODY_BYTES,
    handle_replay,
    handle_resync,
    handle_status,
    percentile,
    target_summary,
)
from replicator.domain.config import Settings
from replicator.domain.model import Target
from tests.fakes import fake_runtime

RUNTIME = fake_runtime(
    Settings(source="src.example.io", targets=(Target("dr.example.io"),))
).runtime


def post(body: bytes) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url="/api/resync", body=body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b'{"repository": 5}', "repository must be a string"),
        (b'{"repository": "UPPER/case"}', "invalid repository"),
        (b'{"repository": "../etc"}', "invalid repository"),
        (b'{"tag": "bad tag"}', "invalid tag"),
        (b'{"dry_run": "yes"}', "dry_run"),
        (b'{"target": "evil.example.com"}', "not a configured target"),
        (b'{"target": "169.254.169.254"}', "not a configured target"),
        (b'{"target": "http://dr.example.io/x"}', "invalid registry"),
        (b'{"source": "evil.example.com"}', "not the configured source"),
        (b'{"target": "src.example.io"}', "not a configured target"),
        (b'{"registry": "x"}', "unknown field"),
        (b'{"repository": "a"' + b" " * MAX_BODY_BYTES + b"}", "body over"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 10_000, "not JSON"),
        (b'{"tag": "v1"}', "tag needs repository"),
    ],
    ids=[
        "not-json",
        "array",
        "string",
        "repository-type",
        "repository-uppercase",
        "repository-traversal",
        "tag-invalid",
        "dry-run-type",
        "foreign-target",
        "metadata-ip-target",
        "url-target",
        "foreign-source",
        "source-as-target",
        "unknown-key",
        "too-large",
        "not-utf8",
        "deep-nesting",
        "tag-without-repository",
    ],
)
def test_resync_refuses_bad_bodies_with_a_json_400(body: bytes, message: str) -> None:
    response = handle_resync(RUNTIME, post(body).get_body())
    assert response.status_code == 400
    assert message in response.body["error"]
    assert json.loads(response.to_json()) == {"error": response.body["error"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b'{"repository": "a", "target": "x"}', "unknown field"),
        (b'{"repository": ["a"]}', "must be a string"),
        (b'{"repository": "A"}', "invalid repository"),
    ],
    ids=["truncated", "unknown-key", "list", "uppercase"],
)
def test_replay_refuses_bad_bodies(body: bytes, message: str) -> None:
    response = handle_replay(RUNTIME, post(body).get_body())
    assert (response.status_code, message in response.body["error"]) == (400, True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tag": "v1"}, "tag needs repository"),
        ({"repository": "Bad"}, "invalid repository"),
        ({"repository": "app", "tag": "a b"}, "invalid tag"),
        ({"registry": "x"}, "unknown parameter"),
        ({"plan": "../x"}, "plan must be a plan id"),
        ({"plan": "A" * 32}, "plan must be a plan id"),
    ],
    ids=["tag-alone", "bad-repository", "bad-tag", "unknown", "plan-path", "plan-uppercase"],
)
def test_status_refuses_bad_queries(params: dict[str, str], message: str) -> None:
    request = func.HttpRequest(method="GET", url="/api/status", body=b"", params=params)
    response = handle_status(RUNTIME, request.params)
    assert (response.status_code, message in response.body["error"]) == (400, True)


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([], 50, None), ([3.0], 95, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([*range(1, 21)], 95, 19)],
    ids=["empty", "one", "median-even", "p95-of-20"],
)
def test_percentile_nearest_rank(values: list[float], pct: float, expected: float | None) -> None:
    assert percentile([float(v) for v in values], pct) == expected


def test_target_summary_counts_jobs_failures_and_lag_per_target() -> None:
    rows: list[dict[str, object]] = [
        {"target": "a", "outcome": "copied", "lagSeconds": 2.0},
        {"target": "a", "outcome": "failed"},
        {"target": "a", "outcome": "retrying", "lagSeconds": 8.0},
        {"target": "b", "outcome": "already_present", "lagSeconds": 1.0},
        {"target": "other", "outcome": "failed"},
    ]
    assert target_summary(rows, ["a", "b", "c"]) == {
        "a": {"lagSeconds": {"p50": 2.0, "p95": 8.0}, "jobs": 3, "failures": 2},
        "b": {"lagSeconds": {"p50": 1.0, "p95": 1.0}, "jobs": 1, "failures": 0},
        "c": {"lagSeconds": {"p50": None, "p95": None}, "jobs": 0, "failures": 0},
    }
