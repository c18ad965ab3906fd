"""Application Insights through OpenTelemetry: metrics, traces and log dimensions.

Everything here talks to the OpenTelemetry *API* only. With nothing configured the API's
providers are no-ops, so recording a metric or opening a span costs next to nothing.
``configure_telemetry(env)`` calls ``configure_azure_monitor()`` once, and only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; Entra (keyless) ingestion comes from
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``ClientId=...;Authorization=AAD``), which
the exporter reads itself.

Names emitted (App Insights ``customMetrics`` / ``dependencies`` / ``traces``):

- ``jobs`` counter {outcome, strategy, target, action, origin}
- ``replication_lag_seconds`` histogram {target, strategy}: source push -> available in DR
- ``copy_duration_seconds`` histogram {target, strategy, outcome}
- ``bytes_copied`` counter {target, strategy}
- ``replication_fallbacks`` counter {target, reason, part=image|referrers}: an import not
  used (refused, or known not to work) and copied over the data plane instead
- ``drift_tags`` gauge {target, kind=missing|stale|extra|referrers_missing}: last reconcile
- ``queue_depth`` / ``poison_messages`` gauges
- ``registry_budget_used`` counter {registry, bucket}: requests of the budget leased
  (``replicator.adapters.budget_pacer``), ``registry_throttled`` counter {registry,
  bucket}: 429s answered; per minute over the budget, they feed a throttling alert
- spans ``event``, ``replicate``, ``import``, ``copy``, ``referrers``; the W3C
  ``traceparent`` travels in the job so the worker continues the event's trace.

Log lines are scrubbed of secrets by ``replicator.adapters.azure.redaction`` (installed
here on the root logger and ours), and so are the dimensions ``log_fields`` gives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Span, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from replicator.adapters.azure.redaction import RESERVED, install_redaction, redact
from replicator.domain.model import CopyJob, JobResult

INSTRUMENTATION = "acr_replicator"
CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
SPAN_NAMES = ("event", "replicate", "import", "copy", "referrers")
DRIFT_KINDS = ("missing", "stale", "extra")
_LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()


class _Instruments:
    """The meters and the tracer, bound to one pair of providers."""

    def __init__(
        self, meter_provider: MeterProvider | None, tracer_provider: TracerProvider | None
    ) -> None:
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        self.jobs = meter.create_counter("jobs", unit="{job}", description="Jobs by outcome")
        self.lag = meter.create_histogram(
            "replication_lag_seconds",
            unit="s",
            description="Source push to available in the DR registry",
            explicit_bucket_boundaries_advisory=_LAG_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "copy_duration_seconds", unit="s", description="Time one job spent copying"
        )
        self.bytes = meter.create_counter("bytes_copied", unit="By", description="Bytes copied")
        self.fallbacks = meter.create_counter(
            "replication_fallbacks",
            unit="{fallback}",
            description="Imports not used (refused or known not to work): copied instead",
        )
        self.budget_used = meter.create_counter(
            "registry_budget_used",
            unit="{request}",
            description="Requests of a registry bucket's budget leased by this instance",
        )
        self.throttled = meter.create_counter(
            "registry_throttled", unit="{response}", description="429s from a registry bucket"
        )
        self.drift: dict[tuple[str, str], int] = {}
        self.queue: dict[str, int] = {}
        meter.create_observable_gauge(
            "drift_tags", [self._observe_drift], unit="{tag}", description="Drift at reconcile"
        )
        meter.create_observable_gauge(
            "queue_depth", [self._observe("depth")], unit="{message}", description="Jobs queued"
        )
        meter.create_observable_gauge(
            "poison_messages", [self._observe("poison")], unit="{message}", description="Poison"
        )

    def _observe_drift(self, _options: CallbackOptions) -> Iterable[Observation]:
        with _lock:
            items = list(self.drift.items())
        return [Observation(n, {"target": t, "kind": k}) for (t, k), n in items]

    def _observe(self, key: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            with _lock:
                value = self.queue.get(key)
            return [] if value is None else [Observation(value)]

        return callback


_state: dict[str, Any] = {"instruments": _Instruments(None, None), "exporting": False}


def use_providers(
    meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None
) -> None:
    """Bind the instruments to these providers (tests: in-memory readers and exporters);
    ``None`` means the global providers, which is what ``configure_azure_monitor`` sets."""
    _state["instruments"] = _Instruments(meter_provider, tracer_provider)


def _instruments() -> _Instruments:
    inst: _Instruments = _state["instruments"]
    return inst


def configure_telemetry(env: Mapping[str, str]) -> bool:
    """Export to Application Insights when its connection string is set. Idempotent.

    Always installs the log redaction filter. Returns whether telemetry is exported."""
    install_redaction(logging.getLogger())
    connection = env.get(CONNECTION_SETTING, "").strip()
    if not connection:
        return bool(_state["exporting"])
    with _lock:
        if _state["exporting"]:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=connection,
            logger_name="replicator",
            enable_live_metrics=True,
        )
        _state["exporting"] = True
    ours = logging.getLogger("replicator")
    if ours.level == logging.NOTSET:  # else INFO (a finished job) falls to the root's WARNING
        ours.setLevel(logging.INFO)
    install_redaction(logging.getLogger())
    install_redaction(ours)
    return True


def record_job(result: JobResult, *, duration_seconds: float | None = None) -> None:
    """One finished job: its outcome, its lag (when the push time is known and it
    succeeded), its bytes and, when the worker timed it, how long the copy took."""
    inst = _instruments()
    job = result.job
    outcome = result.outcome.value
    inst.jobs.add(
        1,
        {
            "outcome": outcome,
            "strategy": result.strategy,
            "target": job.target,
            "action": job.action.value,
            "origin": job.origin,
            "succeeded": result.outcome.succeeded,
        },
    )
    where = {"target": job.target, "strategy": result.strategy}
    lag = result.lag_seconds
    if lag is not None and result.outcome.succeeded:
        inst.lag.record(lag, where)
    if result.bytes_copied:
        inst.bytes.add(result.bytes_copied, where)
    if duration_seconds is not None:
        inst.duration.record(max(0.0, duration_seconds), {**where, "outcome": outcome})


def record_fallback(target: str, reason: str, *, part: str = "image") -> None:
    """One import not used for ``target`` and copied instead; ``reason`` is one of
    ``replicator.adapters.acr.errors.FALLBACK_REASONS``, ``part`` the image or only its
    referrers."""
    _instruments().fallbacks.add(1, {"target": target, "reason": reason, "part": part})


def record_drift(target: str, missing: int, stale: int, extra: int) -> None:
    """The drift one reconcile found on ``target`` (reported as a gauge until the next)."""
    inst = _instruments()
    with _lock:
        for kind, count in zip(DRIFT_KINDS, (missing, stale, extra), strict=True):
            inst.drift[(target, kind)] = count


def record_referrer_drift(target: str, missing: int) -> None:
    """Referrers the source lists and ``target`` lacks, found by the last reconcile pass
    (``drift_tags`` with kind ``referrers_missing``; a pass checks part of the registry)."""
    inst = _instruments()
    with _lock:
        inst.drift[(target, "referrers_missing")] = missing


def record_budget_used(registry: str, bucket: str, requests: int) -> None:
    """``requests`` of ``registry``'s ``bucket`` budget leased (a slice)."""
    _instruments().budget_used.add(requests, {"registry": registry, "bucket": bucket})


def record_throttled(registry: str, bucket: str) -> None:
    """``registry`` answered a request of ``bucket`` 429."""
    _instruments().throttled.add(1, {"registry": registry, "bucket": bucket})


def record_queue(depth: int, poison: int) -> None:
    """The jobs queue's approximate depth and the poison queue's count."""
    inst = _instruments()
    with _lock:
        inst.queue["depth"] = depth
        inst.queue["poison"] = poison


def _attributes(attributes: Mapping[str, object]) -> dict[str, str | int | float | bool]:
    clean: dict[str, str | int | float | bool] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        clean[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return clean


@contextmanager
def span(name: str, **attributes: object) -> Iterator[Span]:
    """A span under the current one; an exception marks it failed and propagates."""
    with _instruments().tracer.start_as_current_span(name, attributes=_attributes(attributes)) as s:
        yield s


def job_trace_context() -> str | None:
    """The W3C ``traceparent`` of the current span, to carry in a job; None without one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continue_trace(traceparent: str | None, name: str, **attributes: object) -> Iterator[Span]:
    """Open ``name`` as a child of the span that ``traceparent`` names (the event's), or as
    a new trace when it is missing or malformed (a job from reconcile, an old message)."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    context = _propagator.extract(carrier)
    tracer = _instruments().tracer
    with tracer.start_as_current_span(
        name, context=context, attributes=_attributes(attributes)
    ) as s:
        yield s


def log_fields(job: CopyJob, **more: object) -> dict[str, object]:
    """An ``extra=`` dict whose keys become ``customDimensions``; no secrets, ever."""
    fields: dict[str, object] = {
        "repository": job.repository,
        "tag": job.tag,
        "digest": job.digest,
        "source": job.source,
        "target": job.target,
        "action": job.action.value,
        "origin": job.origin,
        "job_id": job.job_id,
        "event_id": job.event_id,
    }
    fields.update(more)
    clean: dict[str, object] = {}
    for key, value in fields.items():
        if value is None:
            continue
        name = f"replicator_{key}" if key in RESERVED else key
        clean[name] = redact(value) if isinstance(value, str) else _plain(value)
    return clean


def result_fields(result: JobResult, **more: object) -> dict[str, object]:
    """``log_fields`` for a finished job: outcome, strategy, attempts, bytes, error and
    ``lag_seconds`` (the workbook's and the lag alert's percentiles come from these)."""
    return log_fields(
        result.job,
        outcome=result.outcome.value,
        strategy=result.strategy,
        attempts=result.attempts,
        bytes_copied=result.bytes_copied,
        final_digest=result.digest,
        error=result.error,
        lag_seconds=result.lag_seconds if result.outcome.succeeded else None,
        **more,
    )


def _plain(value: object) -> object:
    if isinstance(value, int | float | bool):
        return value
    return redact(str(getattr(value, "value", value)))
