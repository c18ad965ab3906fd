"""The HTTP functions and the queue under hostile input, on real registries and Azurite:
random bodies get a 4xx answer (never a crash), a registry outside the configuration is
refused before any request reaches it (no server-side request forgery), oversize bodies
are refused. (Auth levels are pinned in tests/functions/test_bindings.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.localrun import queue_message
from devstack.localruntime import LocalRuntime
from devstack.localstack import LocalStack
from devstack.localworker import worker_runtime
from replicator.app.api import MAX_BODY_BYTES, handle_replay, handle_resync, handle_status
from replicator.domain.model import Action, CopyJob
from replicator.functions import triggers

HOSTILE = settings(
    max_examples=60,
    deadline=timedelta(seconds=30),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DIGEST = "sha256:" + "cd" * 32


class Listener(BaseHTTPRequestHandler):
    """A host that must never be contacted: it records anything that reaches it."""

    hits: list[str]

    def _hit(self) -> None:
        self.hits.append(f"{self.command} {self.path}")
        self.send_error(418)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _hit

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def forbidden() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Listener,), {"hits": hits}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def runtime(stack: LocalStack) -> Iterator[LocalRuntime]:
    source, target, azurite = stack.start_registry(), stack.start_registry(), stack.start_azurite()
    try:
        with worker_runtime(source, target, azurite) as (running, _):
            yield running
    finally:
        for service in (source, target, azurite):
            service.stop()


def _body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


NAMES = st.text(max_size=40) | st.sampled_from(["team/app", "v1", "evil.test", "127.0.0.1:1"])
BODIES = st.one_of(
    st.binary(max_size=400),
    st.dictionaries(
        st.sampled_from(["repository", "tag", "target", "source", "dry_run"]) | st.text(max_size=8),
        NAMES | st.integers() | st.booleans() | st.none() | st.lists(st.integers(), max_size=2),
        max_size=4,
    ).map(_body),
    st.integers(0, 3000).map(lambda n: b"[" * n),
)


@HOSTILE
@given(body=BODIES)
def test_resync_and_replay_answer_any_body(runtime: LocalRuntime, body: bytes) -> None:
    for handler in (handle_resync, handle_replay):
        answer = handler(runtime, body)
        assert answer.status_code in {200, 202, 400}, answer.body
        json.loads(answer.to_json())


@HOSTILE
@given(
    params=st.dictionaries(
        st.sampled_from(["repository", "tag", "code"]) | st.text(max_size=8), NAMES, max_size=3
    )
)
def test_status_answers_any_query(runtime: LocalRuntime, params: dict[str, str]) -> None:
    answer = handle_status(runtime, params)
    assert answer.status_code in {200, 400}, answer.body
    json.loads(answer.to_json())


@pytest.mark.parametrize(
    "body",
    [
        {"target": "FORBIDDEN"},
        {"source": "FORBIDDEN"},
        {"target": "FORBIDDEN", "repository": "team/app", "dry_run": True},
        {"target": "127.0.0.1:1@FORBIDDEN"},
        {"target": "FORBIDDEN/v2/../"},
        {"target": "http://FORBIDDEN"},
    ],
    ids=["target", "source", "dry-run", "userinfo", "path", "url"],
)
def test_resync_refuses_a_registry_outside_the_configuration(
    runtime: LocalRuntime, forbidden: tuple[str, list[str]], body: dict[str, str]
) -> None:
    host, hits = forbidden
    data = {k: v.replace("FORBIDDEN", host) if isinstance(v, str) else v for k, v in body.items()}
    request = func.HttpRequest(method="POST", url="/api/resync", body=_body(data))
    response = triggers.resync(request)
    assert response.status_code == 400
    assert "configured" in json.loads(response.get_body())["error"] or "invalid" in str(
        response.get_body()
    )
    assert hits == []


def test_a_queued_job_naming_another_registry_touches_nothing(
    runtime: LocalRuntime, forbidden: tuple[str, list[str]]
) -> None:
    """A forged queue message (the queue is outside input too) cannot aim the worker."""
    host, hits = forbidden
    for source, target in ((host, runtime.settings.targets[0].login_server), (None, host)):
        job = CopyJob(
            action=Action.PUSH,
            source=source or runtime.settings.source,
            target=target,
            repository="team/app",
            digest=DIGEST,
            tag="v1",
        )
        message = queue_message("forged", job.to_json().encode())
        triggers.replicate(message)  # no exception: a retry would not help
        (row,) = [r for r in runtime.status.images("team/app", "v1") if r["target"] == target]
        assert row["outcome"] == "failed" and "outside the configured" in str(row["lastError"])
    assert hits == []


@pytest.mark.parametrize("handler", [triggers.resync, triggers.replay], ids=["resync", "replay"])
def test_oversize_bodies_are_refused(runtime: LocalRuntime, handler: Any) -> None:
    body = b'{"repository": "' + b"a" * MAX_BODY_BYTES + b'"}'
    response = handler(func.HttpRequest(method="POST", url="/api/x", body=body))
    assert response.status_code == 400
    assert "body over" in json.loads(response.get_body())["error"]
