"""Whole-registry resync plans: asked over HTTP, run from their own queue.

An HTTP function must answer within 230 s whatever ``functionTimeout`` says, and listing a
large registry takes longer. So ``POST /api/resync`` only validates, records a plan row
(state ``queued``) and sends a ``PlanRequest`` to ``replication-plans``; the queue-triggered
``run_plan`` lists, diffs and enqueues, writing its progress to the row, which
``GET /api/status?plan=<id>`` shows. A dry run's full plan (too big for a 1 MiB table
entity) goes to a blob in the app's storage account, linked from the row.

Plans have a queue of their own: a plan message on the jobs queue would be poisoned by
workers of an older version during a rolling deploy.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from replicator.app.reconcile import Pacing, compare, enqueue, plan_jobs, refusing_untag
from replicator.domain.budgets import enqueue_per_minute
from replicator.domain.errors import InvalidJobError
from replicator.domain.filters import Filters
from replicator.domain.model import CopyJob, parse_time, utcnow
from replicator.domain.reference import parse_registry, parse_repository

if TYPE_CHECKING:
    from replicator.app.runtime import Runtime

log = logging.getLogger(__name__)
PLAN_VERSION = 1
PLAN_ID = re.compile(r"^[0-9a-f]{32}$")
PROGRESS_EVERY = 500  # jobs enqueued between two progress writes to the plan row
MAX_PLAN_ERRORS = 50


class PlanState:
    QUEUED = "queued"
    LISTING = "listing"
    ENQUEUING = "enqueuing"
    RETRYING = "retrying"  # a transient failure: the plans queue delivers it again
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class PlanRequest:
    """One whole-registry (or one-repository) resync, as queued on ``replication-plans``."""

    source: str
    targets: tuple[str, ...]
    repository: str | None = None
    dry_run: bool = False
    requested_at: datetime = field(default_factory=utcnow)
    plan_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    version: int = PLAN_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "plan_id": self.plan_id,
                "source": self.source,
                "targets": list(self.targets),
                "repository": self.repository,
                "dry_run": self.dry_run,
                "requested_at": self.requested_at.isoformat(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PlanRequest:
        """Decode and validate a plan message; any problem is an ``InvalidJobError``."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise InvalidJobError(f"plan message is not JSON: {str(exc)[:100]}") from exc
        if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
            raise InvalidJobError("not a plan message of version 1")
        return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> PlanRequest:
        plan_id, targets, dry_run = data.get("plan_id"), data.get("targets"), data.get("dry_run")
        if not isinstance(plan_id, str) or not PLAN_ID.match(plan_id):
            raise InvalidJobError("plan_id must be 32 hex digits")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidJobError("targets must be a list of login servers")
        if not isinstance(dry_run, bool):
            raise InvalidJobError("dry_run must be true or false")
        repository = data.get("repository")
        try:
            return cls(
                source=parse_registry(str(data.get("source"))),
                targets=tuple(parse_registry(t) for t in targets),
                repository=parse_repository(repository) if isinstance(repository, str) else None,
                dry_run=dry_run,
                requested_at=parse_time(data.get("requested_at"), "requested_at") or utcnow(),
                plan_id=plan_id,
            )
        except ValueError as exc:  # InvalidReferenceError is a ValueError
            raise InvalidJobError(str(exc)) from exc


@dataclass
class _Progress:
    """A job sender that writes the count to the plan row every ``PROGRESS_EVERY`` jobs."""

    runtime: Runtime
    plan_id: str
    sent: int = 0

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        self.runtime.queue.send(job, delay_seconds=delay_seconds)
        self.sent += 1
        if self.sent % PROGRESS_EVERY == 0:
            self.runtime.status.update_plan(self.plan_id, enqueued=self.sent)


def submit_plan(runtime: Runtime, request: PlanRequest) -> None:
    """Record the plan as queued and put it on the plans queue (no registry request)."""
    runtime.status.record_plan(request.plan_id, request.to_json(), PlanState.QUEUED)
    runtime.plans.send_text(request.to_json())


def run_plan(runtime: Runtime, request: PlanRequest) -> dict[str, Any]:
    """List, diff and enqueue (or, for a dry run, write the plan to a blob); the plan row
    says how far it got. Returns the final row. Raises only what a retry can fix."""
    row = runtime.status.plan(request.plan_id)
    if row is not None and row.get("state") in {PlanState.DONE, PlanState.FAILED}:
        log.info("plan %s already %s: delivered again, skipped", request.plan_id, row["state"])
        return row
    status = runtime.status
    status.record_plan(request.plan_id, request.to_json(), PlanState.LISTING, started=utcnow())
    try:
        return _run(runtime, request)
    except Exception as exc:  # recorded, then raised as is: the host's retry decides
        status.update_plan(request.plan_id, state=PlanState.RETRYING, error=str(exc)[:1000])
        raise


def _run(runtime: Runtime, request: PlanRequest) -> dict[str, Any]:
    settings, status = runtime.settings, runtime.status
    report = compare(
        runtime.registries,
        request.source,
        list(request.targets),
        Filters(settings.include, settings.exclude),
        settings,
        repositories=[request.repository] if request.repository else None,
    )
    counts: dict[str, Any] = {
        "drift": report.drift(),
        "source_tags": report.source_tags,
        "errors": list(report.errors[:MAX_PLAN_ERRORS]),
        "error_count": len(report.errors),
    }
    if request.dry_run:
        document = {
            "plan": request.plan_id,
            "source": request.source,
            "repository": request.repository,
            **counts,
            "plans": {d.target: d.plan.to_dict() if d.plan else None for d in report.targets},
        }
        url = runtime.plan_blobs.put(request.plan_id, json.dumps(document, sort_keys=True))
        status.update_plan(request.plan_id, state=PlanState.DONE, blob=url, **counts)
    else:
        jobs = plan_jobs(
            report, settings, "resync", untag_refused=refusing_untag(runtime.status, report)
        )
        status.update_plan(
            request.plan_id, state=PlanState.ENQUEUING, planned=len(jobs), enqueued=0, **counts
        )
        progress = _Progress(runtime, request.plan_id)
        pacing = Pacing(batch=500, pause_seconds=0.1, jobs_per_minute=enqueue_per_minute(settings))
        sent = enqueue(progress, jobs, pacing)
        status.update_plan(request.plan_id, state=PlanState.DONE, enqueued=sent)
    final = status.plan(request.plan_id) or {}
    log.info(
        "plan %s %s: drift %s; %s jobs enqueued",
        request.plan_id,
        request.repository or "*",
        report.drift(),
        final.get("enqueued", 0),
    )
    return final
