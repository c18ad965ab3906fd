"""The logic behind the HTTP functions ``resync``, ``status`` and ``replay``.

Handlers in ``triggers.py`` pass the raw body or query and turn the ``ApiResponse`` into
an ``HttpResponse``. Bodies are validated strictly (size, JSON object, known keys, types,
names); a registry that is not the configured source or one of the configured targets is
refused with 400, so these endpoints can never be pointed at another host.

An HTTP function must answer within 230 s, so a resync of more than one tag makes no
registry request: it answers 202 with a plan id and the plan runs from its own queue
(``replicator.app.plans``); ``GET /api/status?plan=<id>`` follows it. One tag
(``repository`` and ``tag``) is still resynced at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from replicator.app.budget_status import budget_status
from replicator.app.delivery import import_verdicts
from replicator.app.plans import PLAN_ID, PlanRequest, submit_plan
from replicator.app.reconcile import Pacing, compare, enqueue, plan_jobs, refusing_untag
from replicator.app.referrer_sweep import referrer_status
from replicator.domain.errors import InvalidReferenceError, QueueUnavailableError, RegistryError
from replicator.domain.filters import Filters
from replicator.domain.model import utcnow
from replicator.domain.reference import parse_registry, parse_repository, parse_tag

if TYPE_CHECKING:
    from replicator.app.runtime import Runtime

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024
MAX_LISTED_JOBS = 1000  # jobs echoed back in a 202; the count is always exact
STATUS_WINDOW = timedelta(hours=1)
FAILED_OUTCOMES = frozenset({"failed", "retrying"})


@dataclass(frozen=True)
class ApiResponse:
    status_code: int
    body: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.body, sort_keys=True, default=str)


class BadRequest(ValueError):
    """A request to answer with 400 and this message."""


def _error(status: int, message: str) -> ApiResponse:
    return ApiResponse(status, {"error": message})


def _object(body: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"body over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {str(exc)[:100]}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]}")
    return data


def _name(data: Mapping[str, Any], key: str, parse: Any) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    try:
        return str(parse(value))
    except InvalidReferenceError as exc:
        raise BadRequest(f"{key}: {exc}") from exc


def _configured(runtime: Runtime, data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The source and targets a request may touch; anything else is a 400."""
    settings = runtime.settings
    configured = [t.login_server for t in settings.targets]
    source = _name(data, "source", parse_registry)
    if source is not None and source != settings.source:
        raise BadRequest(f"source {source} is not the configured source registry")
    target = _name(data, "target", parse_registry)
    if target is not None and target not in configured:
        raise BadRequest(f"target {target} is not a configured target registry")
    return settings.source, [target] if target else configured


def _guarded(call: Any) -> ApiResponse:
    try:
        return call()  # type: ignore[no-any-return]
    except BadRequest as exc:
        return _error(400, str(exc))
    except QueueUnavailableError as exc:
        log.warning("api: storage unavailable: %s", exc)
        return _error(503, f"storage unavailable: {exc}")
    except RegistryError as exc:
        log.warning("api: registry error: %s", exc)
        return _error(502, f"registry error: {exc}")


def handle_resync(runtime: Runtime, body: bytes) -> ApiResponse:
    """``{"repository"?, "tag"?, "target"?, "dry_run"?}``. One tag (repository and tag):
    resynced at once, 202 with what was enqueued (200 with the plan for a dry run).
    Anything wider (a repository, or nothing: the whole registry): 202 with a plan id at
    once, before any registry request; the plan runs from ``replication-plans``."""
    return _guarded(lambda: _resync(runtime, body))


def _resync(runtime: Runtime, body: bytes) -> ApiResponse:
    data = _object(body, frozenset({"repository", "tag", "target", "source", "dry_run"}))
    source, targets = _configured(runtime, data)
    repository = _name(data, "repository", parse_repository)
    tag = _name(data, "tag", parse_tag)
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false")
    if tag and not repository:
        raise BadRequest("tag needs repository")
    if repository and tag:
        return _resync_tag(runtime, source, targets, repository, tag, dry_run)
    request = PlanRequest(source, tuple(targets), repository=repository, dry_run=dry_run)
    submit_plan(runtime, request)
    log.info("resync %s: plan %s queued", repository or "*", request.plan_id)
    return ApiResponse(
        202,
        {
            "plan": request.plan_id,
            "state": "queued",
            "status": f"/api/status?plan={request.plan_id}",
            "source": source,
            "targets": targets,
            "repository": repository,
            "dry_run": dry_run,
        },
    )


def _resync_tag(
    runtime: Runtime, source: str, targets: list[str], repository: str, tag: str, dry_run: bool
) -> ApiResponse:
    settings = runtime.settings
    report = compare(
        runtime.registries,
        source,
        targets,
        Filters(settings.include, settings.exclude),
        settings,
        repositories=[repository],
        allows=lambda _r, t: t == tag,
    )
    plans = {d.target: d.plan.to_dict() if d.plan else None for d in report.targets}
    answer: dict[str, Any] = {
        "source": source,
        "repository": repository,
        "tag": tag,
        "drift": report.drift(),
        "errors": list(report.errors[:50]),
    }
    if dry_run:
        return ApiResponse(200, {**answer, "dry_run": True, "plans": plans})
    refused = refusing_untag(runtime.status, report)
    jobs = plan_jobs(report, settings, "resync", untag_refused=refused)
    sent = enqueue(runtime.queue, jobs, Pacing(batch=500, pause_seconds=0.1))
    listed = [_job_summary(j.to_dict()) for j in jobs[:MAX_LISTED_JOBS]]
    log.info("resync %s:%s: %d jobs enqueued, drift %s", repository, tag, sent, report.drift())
    return ApiResponse(202, {**answer, "dry_run": False, "enqueued": sent, "jobs": listed})


def _job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("job_id", "action", "target", "repository", "tag", "digest")
    return {k: job[k] for k in keys}


def handle_status(
    runtime: Runtime, params: Mapping[str, str], *, now: datetime | None = None
) -> ApiResponse:
    """Queue depth, poison count, last reconcile and per-target lag and failures over the
    last hour; with ``?repository=&tag=`` the per-target rows of that image."""
    return _guarded(lambda: _status(runtime, params, now or utcnow()))


def _status(runtime: Runtime, params: Mapping[str, str], now: datetime) -> ApiResponse:
    unknown = sorted(set(params) - {"repository", "tag", "plan", "code"})  # code: function key
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)[:200]}")
    if "plan" in params:
        return _plan_status(runtime, params["plan"])
    repository = _name(params, "repository", parse_repository) if params.get("repository") else None
    tag = _name(params, "tag", parse_tag) if params.get("tag") else None
    if tag and not repository:
        raise BadRequest("tag needs repository")
    if repository:
        rows = runtime.status.images(repository, tag)
        return ApiResponse(200, {"repository": repository, "tag": tag, "targets": rows})
    queue = runtime.queue
    rows = runtime.status.since(now - STATUS_WINDOW)
    targets = [t.login_server for t in runtime.settings.targets]
    return ApiResponse(
        200,
        {
            "queue": {"depth": queue.depth(), "poison": queue.depth(queue.poison_name)},
            "plans": {"depth": runtime.plans.depth()},
            "lastReconcile": runtime.status.last_reconcile(),
            "window": {"from": (now - STATUS_WINDOW).isoformat(), "to": now.isoformat()},
            "targets": target_summary(rows, targets),
            "untagRefused": {t: r for t in targets if (r := runtime.status.untag_refused(t))},
            "importVerdicts": import_verdicts(runtime.deliver),  # "import cannot work here"
            "referrers": referrer_status(runtime),  # the referrer sweep per target
            "budgets": budget_status(runtime, now),  # request budgets, throttled, queue ETA
        },
    )


def _plan_status(runtime: Runtime, plan_id: str) -> ApiResponse:
    """A resync plan's row: state, drift and job counts, errors, and for a finished dry
    run the blob holding the full plan (``blob``)."""
    if not PLAN_ID.match(plan_id):
        raise BadRequest("plan must be a plan id (32 hex digits)")
    row = runtime.status.plan(plan_id)
    if row is None:
        return _error(404, f"no plan {plan_id}")
    return ApiResponse(200, row)


def target_summary(
    rows: Sequence[Mapping[str, object]], targets: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per target: lag p50/p95 (seconds, over the rows that carry a lag), jobs, failures."""
    summary: dict[str, dict[str, Any]] = {}
    for target in targets:
        mine = [r for r in rows if r.get("target") == target]
        lags = sorted(float(v) for r in mine if isinstance(v := r.get("lagSeconds"), int | float))
        summary[target] = {
            "lagSeconds": {"p50": percentile(lags, 50), "p95": percentile(lags, 95)},
            "jobs": len(mine),
            "failures": sum(1 for r in mine if r.get("outcome") in FAILED_OUTCOMES),
        }
    return summary


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``; None when there are none."""
    if not values:
        return None
    rank = max(1, -(-len(values) * pct // 100))  # ceil
    return values[int(rank) - 1]


def handle_replay(runtime: Runtime, body: bytes) -> ApiResponse:
    """``{"repository"?}``: move poison messages (of that repository, or all) back onto the
    jobs queue; answers how many moved."""
    return _guarded(lambda: _replay(runtime, body))


def _replay(runtime: Runtime, body: bytes) -> ApiResponse:
    data = _object(body, frozenset({"repository"}))
    repository = _name(data, "repository", parse_repository)
    moved = runtime.queue.replay_poison(repository)
    log.info("replay %s: %d poison messages moved back", repository or "*", moved)
    return ApiResponse(200, {"replayed": moved, "repository": repository})
