"""What replicator.adapters.azure.telemetry emits, read back through OpenTelemetry's in-memory
exporters."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from replicator.adapters.azure import redaction, telemetry
from replicator.domain.model import Action, CopyJob, JobResult, Outcome

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
PUSHED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtaSIsImF1ZCI6ImFybSJ9.c2lnbmF0dXJlLXBhcnQ"
ACCOUNT_KEY = "A" * 40 + "b" * 46 + "=="


@dataclass
class Captured:
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def finished(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.spans.get_finished_spans()}


@pytest.fixture
def captured() -> Iterator[Captured]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(meter_provider, tracer_provider)
    yield Captured(reader, exporter)
    telemetry.use_providers()
    meter_provider.shutdown()
    tracer_provider.shutdown()


def job(target: str = "contosodr.azurecr.io", **changes: Any) -> CopyJob:
    values: dict[str, Any] = {
        "action": Action.PUSH,
        "source": "contoso.azurecr.io",
        "target": target,
        "repository": "team/app",
        "digest": DIGEST,
        "tag": "1.2.3",
        "event_id": "evt-1",
        "pushed_at": PUSHED,
    }
    values.update(changes)
    return CopyJob(**values)


def result(outcome: Outcome, *, after: float = 42.0, **changes: Any) -> JobResult:
    values: dict[str, Any] = {
        "job": job(),
        "outcome": outcome,
        "strategy": "import",
        "finished_at": PUSHED + timedelta(seconds=after),
    }
    values.update(changes)
    return JobResult(**values)


def test_record_job_counts_by_outcome_strategy_and_target(captured: Captured) -> None:
    telemetry.record_job(result(Outcome.IMPORTED), duration_seconds=3.5)
    telemetry.record_job(result(Outcome.IMPORTED))
    telemetry.record_job(result(Outcome.FAILED, strategy="copy", error="401"))

    jobs = {
        (p.attributes["outcome"], p.attributes["strategy"], p.attributes["target"]): p.value
        for p in captured.points("jobs")
    }
    assert jobs == {
        ("imported", "import", "contosodr.azurecr.io"): 2,
        ("failed", "copy", "contosodr.azurecr.io"): 1,
    }
    succeeded = {
        p.attributes["outcome"]: p.attributes["succeeded"] for p in captured.points("jobs")
    }
    assert succeeded == {"imported": True, "failed": False}


def test_lag_is_recorded_for_successes_with_a_push_time(captured: Captured) -> None:
    telemetry.record_job(result(Outcome.COPIED, after=42.0, strategy="copy"))
    telemetry.record_job(result(Outcome.FAILED, after=900.0))  # a failure is not lag
    telemetry.record_job(result(Outcome.COPIED, job=job(pushed_at=None)))  # no push time

    (lag,) = captured.points("replication_lag_seconds")
    assert (lag.count, lag.sum) == (1, 42.0)
    assert dict(lag.attributes) == {"target": "contosodr.azurecr.io", "strategy": "copy"}
    assert 60.0 in lag.explicit_bounds  # the advisory buckets suit seconds-to-hours lag


def test_bytes_and_copy_duration(captured: Captured) -> None:
    telemetry.record_job(
        result(Outcome.COPIED, strategy="copy", bytes_copied=1024), duration_seconds=2.5
    )
    telemetry.record_job(
        result(Outcome.COPIED, strategy="copy", bytes_copied=1), duration_seconds=-1
    )

    (copied,) = captured.points("bytes_copied")
    assert copied.value == 1025
    (duration,) = captured.points("copy_duration_seconds")
    assert (duration.count, duration.sum) == (2, 2.5)  # a negative clock step counts as 0
    assert duration.attributes["outcome"] == "copied"


def test_fallbacks_are_counted_by_target_reason_and_part(captured: Captured) -> None:
    telemetry.record_fallback("a.azurecr.io", "source-read")
    telemetry.record_fallback("a.azurecr.io", "source-read")
    telemetry.record_fallback("a.azurecr.io", "network", part="referrers")
    telemetry.record_fallback("b.azurecr.io", "too-many-manifests")

    counts = {
        (p.attributes["target"], p.attributes["reason"], p.attributes["part"]): p.value
        for p in captured.points("replication_fallbacks")
    }
    assert counts == {
        ("a.azurecr.io", "source-read", "image"): 2,
        ("a.azurecr.io", "network", "referrers"): 1,
        ("b.azurecr.io", "too-many-manifests", "image"): 1,
    }


def test_drift_and_queue_gauges_report_the_last_value(captured: Captured) -> None:
    telemetry.record_drift("a.azurecr.io", missing=3, stale=1, extra=0)
    telemetry.record_drift("b.azurecr.io", missing=0, stale=0, extra=2)
    telemetry.record_drift("a.azurecr.io", missing=1, stale=0, extra=0)
    telemetry.record_queue(depth=17, poison=2)

    drift = {
        (p.attributes["target"], p.attributes["kind"]): p.value
        for p in captured.points("drift_tags")
    }
    assert drift == {
        ("a.azurecr.io", "missing"): 1,
        ("a.azurecr.io", "stale"): 0,
        ("a.azurecr.io", "extra"): 0,
        ("b.azurecr.io", "missing"): 0,
        ("b.azurecr.io", "stale"): 0,
        ("b.azurecr.io", "extra"): 2,
    }
    assert [p.value for p in captured.points("queue_depth")] == [17]
    assert [p.value for p in captured.points("poison_messages")] == [2]


def test_queue_gauges_stay_silent_until_measured(captured: Captured) -> None:
    assert captured.points("queue_depth") == []
    assert captured.points("drift_tags") == []


def test_one_trace_from_event_through_job_to_copy(captured: Captured) -> None:
    with telemetry.span("event", event_id="evt-1", repository="team/app", tag=None):
        carried = telemetry.job_trace_context()
    assert carried is not None
    assert carried.startswith("00-")

    with telemetry.continue_trace(carried, "replicate", job_id="j1", target="dr.azurecr.io"):
        with telemetry.span("import", strategy="import"):
            pass
        with telemetry.span("referrers", count=2):
            pass

    spans = captured.finished()
    assert set(spans) == {"event", "replicate", "import", "referrers"}
    trace_ids = {s.context.trace_id for s in spans.values()}
    assert len(trace_ids) == 1
    assert spans["replicate"].parent is not None
    assert spans["replicate"].parent.span_id == spans["event"].context.span_id
    assert spans["import"].parent is not None
    assert spans["import"].parent.span_id == spans["replicate"].context.span_id
    assert dict(spans["event"].attributes or {}) == {"event_id": "evt-1", "repository": "team/app"}
    assert dict(spans["referrers"].attributes or {}) == {"count": 2}


@pytest.mark.parametrize(
    "carried",
    [None, "", "garbage", "00-00000000000000000000000000000000-0000000000000000-01"],
    ids=["none", "empty", "malformed", "all-zero"],
)
def test_a_job_without_a_valid_traceparent_starts_a_new_trace(
    captured: Captured, carried: str | None
) -> None:
    with telemetry.continue_trace(carried, "replicate", origin="reconcile"):
        pass
    (only,) = captured.spans.get_finished_spans()
    assert only.name == "replicate"
    assert only.parent is None


def test_a_failing_span_records_the_error_and_reraises(captured: Captured) -> None:
    with pytest.raises(RuntimeError, match="boom"), telemetry.span("copy", target="dr"):
        raise RuntimeError("boom")
    copy = captured.finished()["copy"]
    assert copy.status.status_code is StatusCode.ERROR
    assert [e.name for e in copy.events] == ["exception"]


def test_without_a_configured_provider_spans_cost_nothing_and_carry_nothing() -> None:
    telemetry.use_providers()  # the global, unconfigured (no-op) providers
    with telemetry.span("event", event_id="e") as current:
        assert not current.is_recording()
        assert telemetry.job_trace_context() is None
    telemetry.record_job(result(Outcome.COPIED))  # no provider: accepted and dropped


def test_log_fields_give_custom_dimensions_without_secrets() -> None:
    fields = telemetry.log_fields(
        job(tag=None),
        outcome=Outcome.FAILED,
        error=f"401 from registry, Authorization: Bearer {JWT}",
        attempts=3,
        name="clashes with LogRecord.name",
    )
    assert fields == {
        "repository": "team/app",
        "digest": DIGEST,
        "source": "contoso.azurecr.io",
        "target": "contosodr.azurecr.io",
        "action": "push",
        "origin": "event",
        "job_id": job(tag=None).job_id,
        "event_id": "evt-1",
        "outcome": "failed",
        "error": "401 from registry, Authorization: Bearer ***",
        "attempts": 3,
        "replicator_name": "clashes with LogRecord.name",
    }
    record = logging.getLogger("replicator.test").makeRecord(
        "replicator.test", logging.INFO, __file__, 1, "job done", (), None, extra=fields
    )  # makeRecord raises KeyError on a reserved name such as "name"
    assert record.__dict__["replicator_name"] == "clashes with LogRecord.name"
    assert record.name == "replicator.test"


def test_result_fields_carry_the_lag_the_alerts_read() -> None:
    done = telemetry.result_fields(result(Outcome.COPIED, after=12.5, strategy="copy"))
    assert (done["outcome"], done["strategy"], done["lag_seconds"]) == ("copied", "copy", 12.5)
    failed = telemetry.result_fields(result(Outcome.FAILED, error="token=abc denied"))
    assert "lag_seconds" not in failed
    assert failed["error"] == "token=*** denied"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer ***"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
        (f"token was {JWT} here", "token was *** here"),
        (
            "grant_type=refresh_token&refresh_token=abc.def&service=x",
            "grant_type=refresh_token&refresh_token=***&service=x",
        ),
        (
            '{"access_token": "s3cr3t", "expires_in": 3600}',
            '{"access_token": "***", "expires_in": 3600}',
        ),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        (
            f"DefaultEndpointsProtocol=https;AccountName=st;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        (f"key {ACCOUNT_KEY} leaked", "key *** leaked"),
        (
            "https://q.core.windows.net/jobs?sv=2024&sig=AbC%2Bdef",
            "https://q.core.windows.net/jobs?sv=2024&sig=***",
        ),
        (
            "pull https://bob:hunter2@registry.example/v2/",
            "pull https://bob:***@registry.example/v2/",
        ),
        (
            "copied team/app@sha256:abcd to dr.azurecr.io",
            "copied team/app@sha256:abcd to dr.azurecr.io",
        ),
    ],
    ids=[
        "bearer",
        "basic",
        "bare-jwt",
        "form-token",
        "json-token",
        "password",
        "connection-string",
        "bare-account-key",
        "sas-signature",
        "url-password",
        "harmless",
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redaction.redact(text) == expected


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_redaction_filter_scrubs_messages_arguments_and_extras() -> None:
    parent = logging.getLogger("redaction-test")
    parent.propagate = False
    parent.setLevel(logging.INFO)
    handler = ListHandler()
    parent.addHandler(handler)
    try:
        redaction.install_redaction(parent)
        redaction.install_redaction(parent)  # idempotent
        assert sum(isinstance(f, redaction.RedactionFilter) for f in handler.filters) == 1
        child = logging.getLogger("redaction-test.child")  # only the handler's filter sees it
        child.warning("exchange failed for %s with %s", "dr.azurecr.io", f"Bearer {JWT}")
        child.info("form: password=hunter2", extra={"detail": f"refresh_token={JWT}", "count": 2})
    finally:
        parent.removeHandler(handler)
    first, second = handler.records
    assert first.getMessage() == "exchange failed for dr.azurecr.io with Bearer ***"
    assert second.getMessage() == "form: password=***"
    assert second.__dict__["detail"] == "refresh_token=***"
    assert second.__dict__["count"] == 2
    assert JWT not in repr([r.__dict__ for r in handler.records])


def test_configure_telemetry_without_a_connection_string_exports_nothing() -> None:
    assert telemetry.configure_telemetry({}) is False
    assert telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False
    root = logging.getLogger()
    try:
        assert any(isinstance(f, redaction.RedactionFilter) for f in root.filters)
    finally:  # leave the root logger as pytest set it up
        for holder in (root, *root.handlers):
            for f in [f for f in holder.filters if isinstance(f, redaction.RedactionFilter)]:
                holder.removeFilter(f)


SCRIPT = """
import json, logging, os
from opentelemetry import metrics, trace
from replicator.adapters.azure import redaction, telemetry
env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": os.environ["CS"]}
first = telemetry.configure_telemetry(env)
provider = trace.get_tracer_provider()
second = telemetry.configure_telemetry(env)
with telemetry.span("event", event_id="e1"):
    carried = telemetry.job_trace_context()
handlers = logging.getLogger("replicator").handlers
print(json.dumps({
    "first": first, "second": second,
    "same_provider": trace.get_tracer_provider() is provider,
    "tracer_provider": type(provider).__module__,
    "meter_provider": type(metrics.get_meter_provider()).__module__,
    "traceparent": carried,
    "handler_filtered": all(
        any(isinstance(f, redaction.RedactionFilter) for f in h.filters) for h in handlers),
    "handlers": len(handlers),
    "level": logging.getLogger("replicator").getEffectiveLevel(),
}), flush=True)
os._exit(0)  # skip the exporter's flush to an endpoint that is not there
"""


def test_configure_telemetry_configures_azure_monitor_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CS": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/",
        "TMPDIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["first"] is True
    assert seen["second"] is True
    assert seen["same_provider"] is True
    assert seen["tracer_provider"].startswith("opentelemetry.sdk")
    assert seen["meter_provider"].startswith("opentelemetry.sdk")
    assert seen["traceparent"].startswith("00-")
    assert seen["handlers"] >= 1
    assert seen["handler_filtered"] is True
    assert seen["level"] == logging.INFO  # job results (INFO) reach Application Insights


PROXY_SCRIPT = """
import json
from replicator.adapters.azure import telemetry  # instruments made before any provider exists
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))  # as configure_azure_monitor
trace.set_tracer_provider(TracerProvider())
telemetry.record_queue(depth=3, poison=1)
telemetry.record_job(telemetry_result)
with telemetry.span("event"):
    carried = telemetry.job_trace_context()
names = {m.name for rm in reader.get_metrics_data().resource_metrics
         for sm in rm.scope_metrics for m in sm.metrics}
print(json.dumps({"metrics": sorted(names), "traceparent": carried}))
"""


def test_instruments_made_at_import_follow_the_provider_set_later() -> None:
    """Production order: replicator.adapters.azure.telemetry is imported (instruments on the
    API's proxy
    providers) before configure_azure_monitor installs the SDK's; the data must follow."""
    setup = (
        "from datetime import UTC, datetime\n"
        "from replicator.domain.model import Action, CopyJob, JobResult, Outcome\n"
        "job = CopyJob(action=Action.PUSH, source='a.azurecr.io', target='b.azurecr.io', "
        f"repository='r', digest='{DIGEST}', pushed_at=datetime(2026, 1, 1, tzinfo=UTC))\n"
        "telemetry_result = JobResult(job, Outcome.COPIED, strategy='copy', bytes_copied=5)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", setup + PROXY_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"queue_depth", "poison_messages", "jobs", "bytes_copied"} <= set(seen["metrics"])
    assert "replication_lag_seconds" in seen["metrics"]
    assert seen["traceparent"].startswith("00-")
