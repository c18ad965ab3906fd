"""The Functions handlers: decode the binding, call the service, map the outcome.

``register(app, settings)`` binds them to a ``FunctionApp`` with the names, triggers,
queue, schedule setting and auth levels of CONTRACT.md. No business logic lives here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import azure.functions as func

from replicator.adapters.azure.telemetry import (
    configure_telemetry,
    job_trace_context,
    record_drift,
    record_queue,
    span,
)
from replicator.app import service
from replicator.app.api import ApiResponse, handle_replay, handle_resync, handle_status
from replicator.app.plans import PlanRequest
from replicator.app.plans import run_plan as execute_plan
from replicator.app.reconcile import run_reconcile
from replicator.app.runtime import Runtime, build_runtime
from replicator.domain.config import Settings, load_settings
from replicator.domain.errors import InvalidEventError, InvalidJobError
from replicator.domain.events import decide, parse_event
from replicator.domain.model import PLANS_QUEUE, QUEUE_NAME, CopyJob, utcnow

log = logging.getLogger("replicator")
T = TypeVar("T")


class PoisonSink(Protocol):
    def send_poison(self, body: str, reason: str) -> None: ...


_lock = threading.Lock()
_runtime: Runtime | None = None


def startup(env: Mapping[str, str]) -> Settings:
    """Validate every setting at start-up (one ``ConfigError`` lists all problems)."""
    settings = load_settings(env, require_storage=True)
    configure_telemetry(env)
    return settings


def use_runtime(runtime: Runtime | None) -> None:
    """Install the runtime the handlers use (tests and the local runner)."""
    global _runtime
    with _lock:
        _runtime = runtime


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(load_settings(os.environ, require_storage=True))
        return _runtime


def on_registry_event(event: func.EventGridEvent) -> None:
    """Event Grid -> one job per target. Malformed or foreign events are logged and dropped;
    a queue that cannot be reached raises, so Event Grid retries and finally dead-letters."""
    rt = runtime()
    try:
        parsed = parse_event(
            event_id=event.id,
            event_type=event.event_type,
            topic=event.topic,
            data=event.get_json(),
            event_time=event.event_time,
        )
    except InvalidEventError as exc:
        log.warning("dropped malformed event %s: %s", str(event.id)[:100], exc)
        return
    with span(
        "event",
        event_id=parsed.event_id,
        kind=parsed.kind,
        repository=parsed.repository,
        tag=parsed.tag,
        digest=parsed.digest,
    ):
        decision = decide(parsed, rt.settings, now=utcnow())
        if decision.ignored:
            log.warning(
                "ignored event %s for %s: %s", parsed.event_id, parsed.repository, decision.ignored
            )
            return
        traceparent = job_trace_context()
        for job in decision.jobs:
            rt.queue.send(job.evolve(traceparent=traceparent), delay_seconds=decision.delay_seconds)
    log.info(
        "event %s %s %s:%s -> %d job(s)",
        parsed.event_id,
        parsed.kind,
        parsed.repository,
        parsed.tag or parsed.digest,
        len(decision.jobs),
    )


def replicate(msg: func.QueueMessage) -> None:
    """Run one job. A malformed message goes to the poison queue at once, with its reason;
    only failures a retry can fix are raised (the host retries, then poisons)."""
    rt = runtime()
    job = _decoded(msg, CopyJob.from_json, rt.queue, "message")
    if job is None:
        return
    attempt = getattr(msg, "dequeue_count", None) or 1
    service.replicate(rt, job, attempt=int(attempt))


def run_plan(msg: func.QueueMessage) -> None:
    """Run one resync plan (list, diff, enqueue). A malformed plan message goes to the
    plans' poison queue at once; only failures a retry can fix are raised."""
    rt = runtime()
    request = _decoded(msg, PlanRequest.from_json, rt.plans, "plan message")
    if request is None:
        return
    with span("plan", plan=request.plan_id, repository=request.repository or "*"):
        execute_plan(rt, request)


def _decoded(
    msg: func.QueueMessage, parse: Callable[[bytes], T], poison: PoisonSink, what: str
) -> T | None:
    """The message parsed, or None once a malformed one went to ``poison`` with its reason."""
    body = msg.get_body()
    try:
        return parse(body)
    except InvalidJobError as exc:
        log.error("poisoned malformed %s %s: %s", what, msg.id, exc)
        poison.send_poison(body.decode("utf-8", "replace"), str(exc))
        return None


def reconcile(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("reconcile is running late")
    rt = runtime()
    with span("reconcile", source=rt.settings.source):
        report = run_reconcile(rt)
    for target, counts in report.drift().items():
        if min(counts.values()) >= 0:  # -1: the target could not be listed
            record_drift(target, counts["missing"], counts["stale"], counts["extra"])
    record_queue(rt.queue.depth(), rt.queue.depth(rt.queue.poison_name))


def _http(answer: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(
        answer.to_json(), status_code=answer.status_code, mimetype="application/json"
    )


def resync(req: func.HttpRequest) -> func.HttpResponse:
    return _http(handle_resync(runtime(), req.get_body()))


def status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(handle_status(runtime(), dict(req.params)))


def replay(req: func.HttpRequest) -> func.HttpResponse:
    return _http(handle_replay(runtime(), req.get_body()))


def register(app: func.FunctionApp, settings: Settings) -> None:
    """Bind the seven functions; names are part of the deployment (Event Grid uses them)."""
    app.function_name("on_registry_event")(
        app.event_grid_trigger(arg_name="event")(on_registry_event)
    )
    app.function_name("replicate")(
        app.queue_trigger(
            arg_name="msg", queue_name=QUEUE_NAME, connection=settings.queue_connection
        )(replicate)
    )
    app.function_name("run_plan")(
        app.queue_trigger(
            arg_name="msg", queue_name=PLANS_QUEUE, connection=settings.queue_connection
        )(run_plan)
    )
    app.function_name("reconcile")(
        app.timer_trigger(
            arg_name="timer",
            schedule="%REPLICATOR_RECONCILE_SCHEDULE%",
            run_on_startup=False,
            use_monitor=True,
        )(reconcile)
    )
    routes = (
        ("resync", "POST", func.AuthLevel.FUNCTION, resync),
        ("status", "GET", func.AuthLevel.FUNCTION, status),
        ("replay", "POST", func.AuthLevel.ADMIN, replay),
    )
    for name, method, level, handler in routes:
        app.function_name(name)(app.route(route=name, methods=[method], auth_level=level)(handler))
