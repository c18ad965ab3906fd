"""The handlers called with real azure.functions objects, on Azurite and real registries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devstack.localrun import queue_message
from devstack.localruntime import LocalRuntime, local_runtime
from devstack.localstack import Azurite, Registry, free_port
from devstack.localworker import worker_runtime
from replicator.adapters.azure.queue import NO_WAIT_RETRY
from replicator.app.runtime import build_runtime
from replicator.domain.config import load_settings
from replicator.domain.errors import QueueUnavailableError
from replicator.domain.model import CopyJob
from replicator.functions import triggers
from tests.metrics import metric_names

DIGEST = "sha256:" + "57" * 32


def _event(host: str, **data: object) -> func.EventGridEvent:
    payload: dict[str, object] = {
        "action": "push",
        "timestamp": "2026-11-28T10:00:00Z",
        "target": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": DIGEST,
            "repository": "team/app",
            "tag": "v1",
        },
        "request": {"host": host, "method": "PUT"},
    }
    payload.update(data)
    return func.EventGridEvent(
        id="evt-1",
        data=payload,
        topic="",
        subject="team/app:v1",
        event_type="Microsoft.ContainerRegistry.ImagePushed",
        event_time=datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
        data_version="2.0",
    )


@pytest.fixture
def runtime(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> Iterator[LocalRuntime]:
    source, target = registry_pair
    with worker_runtime(source, target, fresh_azurite) as (rt, _):
        yield rt


def _queued(rt: LocalRuntime) -> list[CopyJob]:
    return [CopyJob.from_json(m.content) for m in rt.queue.client().peek_messages(max_messages=32)]


def test_push_event_enqueues_one_job_per_target_with_its_trace(runtime: LocalRuntime) -> None:
    triggers.on_registry_event(_event(runtime.settings.source))
    (job,) = _queued(runtime)
    assert (job.repository, job.tag, job.digest) == ("team/app", "v1", DIGEST)
    assert job.target == runtime.settings.targets[0].login_server
    assert job.event_id == "evt-1"
    assert job.traceparent is None or job.traceparent.startswith("00-")


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        ({"target": "garbage"}, "dropped malformed event"),
        ({"target": {"repository": "team/app", "digest": "sha256:nope"}}, "invalid digest"),
        ({"request": {"host": "elsewhere.azurecr.io"}}, "not the configured source"),
    ],
    ids=["no-target", "bad-digest", "foreign-registry"],
)
def test_bad_or_foreign_events_are_logged_and_dropped(
    runtime: LocalRuntime, caplog: pytest.LogCaptureFixture, change: dict[str, object], logged: str
) -> None:
    host = runtime.settings.source
    with caplog.at_level(logging.WARNING, logger="replicator"):
        triggers.on_registry_event(_event(host, **change))
    assert logged in caplog.text
    assert _queued(runtime) == []


def test_unreachable_queue_raises_so_event_grid_retries(fresh_azurite: Azurite) -> None:
    """The storage SDK's retry is the one injected (here: one retry, no sleep), not a
    hard-coded backoff: the queue sees exactly two attempts, then the event fails."""
    dead = fresh_azurite.connection_string.replace(str(fresh_azurite.queue_port), str(free_port()))
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": "127.0.0.1:5001",
            "REPLICATOR_TARGETS": "127.0.0.1:5002",
            "AzureWebJobsStorage": dead,
        },
        require_storage=True,
    )
    rt = local_runtime(build_runtime(settings, storage_retry=NO_WAIT_RETRY))
    attempts: list[str] = []
    rt.queue.request_hook = lambda request: attempts.append(request.http_request.method)
    triggers.use_runtime(rt)
    try:
        with pytest.raises(QueueUnavailableError):
            triggers.on_registry_event(_event("127.0.0.1:5001"))
    finally:
        triggers.use_runtime(None)
        rt.close()
    assert attempts == ["POST"] * (1 + NO_WAIT_RETRY.total)


def test_malformed_queue_message_is_poisoned_not_raised(runtime: LocalRuntime) -> None:
    triggers.replicate(queue_message("m1", b"not json"))
    (poisoned,) = runtime.queue.client(runtime.queue.poison_name).peek_messages()
    assert "not JSON" in json.loads(poisoned.content)["poison_reason"]


def test_http_status_and_resync(runtime: LocalRuntime) -> None:
    answer = triggers.status(func.HttpRequest("GET", "/api/status", body=b"", params={}))
    assert answer.status_code == 200
    body = json.loads(answer.get_body())
    assert body["queue"] == {"depth": 0, "poison": 0}
    assert body["plans"] == {"depth": 0}
    bad = triggers.resync(func.HttpRequest("POST", "/api/resync", body=b"{not json"))
    assert bad.status_code == 400 and "error" in json.loads(bad.get_body())
    foreign = triggers.resync(
        func.HttpRequest(
            "POST", "/api/resync", body=json.dumps({"target": "evil.example.com"}).encode()
        )
    )
    assert foreign.status_code == 400
    dry = triggers.resync(func.HttpRequest("POST", "/api/resync", body=b'{"dry_run": true}'))
    assert dry.status_code == 202 and json.loads(dry.get_body())["state"] == "queued"


def test_replay_moves_poison_back(runtime: LocalRuntime) -> None:
    job = CopyJob.from_json(
        json.dumps(
            {
                "version": 1,
                "action": "push",
                "source": runtime.settings.source,
                "target": runtime.settings.targets[0].login_server,
                "repository": "team/app",
                "digest": DIGEST,
                "tag": "v1",
            }
        )
    )
    runtime.queue.send_text(job.to_json(), queue=runtime.queue.poison_name)
    answer = triggers.replay(func.HttpRequest("POST", "/api/replay", body=b"{}"))
    assert answer.status_code == 200
    assert json.loads(answer.get_body())["replayed"] == 1
    assert _queued(runtime) == [job]


def test_reconcile_timer_runs_and_records(runtime: LocalRuntime) -> None:
    triggers.reconcile(TimerRequest(past_due=True))
    last = runtime.status.last_reconcile()
    assert last is not None and last["enqueued"] == 0


def test_one_trace_from_event_through_queue_to_copy(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from devstack.localworker import deliver_push, drain
    from devstack.testimages import push_test_image
    from replicator.adapters.azure import telemetry
    from replicator.domain.reference import ImageRef

    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(meter_provider, tracer_provider)
    source, target = registry_pair
    try:
        with worker_runtime(source, target, fresh_azurite) as (rt, _):
            ref = ImageRef(source.host, "team/app", "v1")
            deliver_push(ref, push_test_image(rt.registries, ref).digest)
            drain(rt)
    finally:
        telemetry.use_providers()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"event", "replicate", "copy"} <= set(spans)
    trace_ids = {spans[name].context.trace_id for name in ("event", "replicate", "copy")}
    assert len(trace_ids) == 1  # the job carried the event's trace through the queue
    assert spans["replicate"].attributes is not None
    assert spans["replicate"].attributes["outcome"] == "copied"
    assert {"jobs", "replication_lag_seconds", "copy_duration_seconds"} <= metric_names(reader)
    meter_provider.shutdown()
    tracer_provider.shutdown()
