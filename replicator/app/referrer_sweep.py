"""One reconcile pass of referrer drift, with its cursor in the status table.

Per planned target: the images in step by tags; first those that changed since the last
pass (a job finished on them, per the status table's ``since``, or their fallback tag
moved), then the rolling sweep from the target's cursor (``referrers|<target>`` in
the runtime's ``CursorStore``, ``replicator.adapters.azure.cursors``), until the pass's
share of either registry's referrers budget is spent, in calls
(``replicator.app.referrer_checks``; the registry clients' budget pacer paces them). The
cursor moves on, the pass's counts go into it (``status`` shows them,
``referrer_status``) and into the ``drift_tags`` gauge (kind ``referrers_missing``); the
jobs go back to reconcile to send.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from replicator.adapters.azure.cursors import Cursor
from replicator.adapters.azure.telemetry import record_referrer_drift
from replicator.app.ports import CursorStore, ReferrerLister
from replicator.app.referrer_checks import Checked, Pace, ReferrerChecker
from replicator.app.referrer_drift import (
    PASS_MINUTES,
    Image,
    Referrer,
    advance,
    changed_subjects,
    in_step_images,
    plan_sweep,
    read_through,
    referrer_jobs,
    rolled,
)
from replicator.domain.config import Settings
from replicator.domain.model import CopyJob, TagEntry, utcnow

if TYPE_CHECKING:
    from replicator.app.reconcile import ReconcileReport
    from replicator.app.runtime import Runtime

log = logging.getLogger(__name__)
RECENT_MARGIN = timedelta(minutes=5)  # results recorded while the last pass ran
FIRST_WINDOW = timedelta(hours=1)  # "recent" before any pass ran
CURSOR_PREFIX = "referrers|"


@dataclass(frozen=True)
class TargetReferrers:
    """What one pass found for one target."""

    target: str
    images: int  # in step by tags: the whole sweep
    checked: int  # images checked this pass
    missing: tuple[Referrer, ...] = ()
    extra: tuple[Referrer, ...] = ()
    errors: tuple[str, ...] = ()
    cursor: Cursor | None = None
    stopped: str | None = None

    def counts(self) -> dict[str, int]:
        return {
            "images": self.images,
            "checked": self.checked,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "unread": len(self.errors),
        }


@dataclass(frozen=True)
class ReferrerPass:
    targets: tuple[TargetReferrers, ...] = ()
    jobs: tuple[CopyJob, ...] = field(default=(), repr=False)
    requests: int = 0


def check_referrers(
    runtime: Runtime,
    report: ReconcileReport,
    *,
    now: datetime | None = None,
    minutes: float | None = PASS_MINUTES,
) -> ReferrerPass:
    """One reconcile pass of referrer drift over every planned target: the jobs that
    close it (not sent), the cursors moved on, the counts recorded for ``status``. At
    most ``minutes`` of each registry's referrers budget in calls (``Pace``); the
    registry clients' pacer paces them, nothing here waits."""
    settings = runtime.settings
    now = now or utcnow()
    cursors = runtime.cursors
    pace = Pace(settings, minutes=minutes)
    found: list[TargetReferrers] = []
    jobs: list[CopyJob] = []
    for drift in report.targets:
        if drift.plan is None:
            continue
        side = _Side(runtime.referrers, drift.target, drift.entries)
        result = _target_pass(runtime, report, side, cursors, pace, now)
        found.append(result)
        record_referrer_drift(result.target, len(result.missing))
        jobs += referrer_jobs(
            result.missing,
            result.extra,
            source=settings.source,
            target=result.target,
            origin="reconcile",
            delete_extra=settings.delete_policy.deletes,
        )
    return ReferrerPass(tuple(found), tuple(jobs), pace.requests)


@dataclass(frozen=True)
class _Side:
    lister: ReferrerLister
    target: str
    entries: Sequence[TagEntry]  # the target's tag listing


def _target_pass(
    runtime: Runtime,
    report: ReconcileReport,
    side: _Side,
    cursors: CursorStore,
    pace: Pace,
    now: datetime,
) -> TargetReferrers:
    settings, target, entries = runtime.settings, side.target, side.entries
    images = in_step_images(report.source_entries, entries)
    cursor = cursors.get(CURSOR_PREFIX + target)
    since = cursor.passed_at - RECENT_MARGIN if cursor.passed_at else now - FIRST_WINDOW
    changed = changed_subjects(report.source_entries, entries) | _recent(runtime, target, since)
    sweep = plan_sweep(images, cursor.position, changed)
    checker = ReferrerChecker(
        side.lister,
        settings.source,
        target,
        pace,
        delete_extra=settings.delete_policy.deletes,
    )
    first = checker.check_all(sweep.priority)
    seen = {c.image for c in first.checks}
    rolling = Checked((), first.stopped)
    if first.stopped is None:
        rolling = checker.check_all([i for i in sweep.rolling if i not in seen])
    done = rolled(sweep, seen, read_through([c.error is not None for c in rolling.checks]))
    position, lap = advance(sweep, done, cursor.position)
    checks = first.checks + rolling.checks
    result = TargetReferrers(
        target,
        len(images),
        len(checks),
        tuple(r for c in checks if c.error is None for r in c.missing),
        tuple(r for c in checks if c.error is None for r in c.extra),
        tuple(c.error for c in checks if c.error is not None),
        stopped=rolling.stopped,
    )
    moved = Cursor(cursor.name, position, cursor.laps + int(lap), now, result.counts())
    cursors.put(moved)
    return replace(result, cursor=moved)


def sweep_all(
    lister: ReferrerLister,
    settings: Settings,
    source_entries: Sequence[TagEntry],
    target: str,
    target_entries: Sequence[TagEntry],
    *,
    concurrency: int = 8,
) -> TargetReferrers:
    """Every in-step image's referrer drift in one pass (``diff --referrers``): not
    capped (the registry clients' pacer keeps it within the budgets); no cursor, no jobs."""
    images = in_step_images(source_entries, target_entries)
    pace = Pace(settings, minutes=None)
    checker = ReferrerChecker(lister, settings.source, target, pace, concurrency=concurrency)
    done = checker.check_all(images)
    return TargetReferrers(
        target,
        len(images),
        len(done.checks),
        tuple(sorted(r for c in done.checks if c.error is None for r in c.missing)),
        errors=tuple(c.error for c in done.checks if c.error is not None),
        stopped=done.stopped,
    )


def _recent(runtime: Runtime, target: str, since: datetime) -> frozenset[Image]:
    """Images a job finished on ``target`` since ``since`` (the status table's rows)."""
    rows = runtime.status.since(since)
    return frozenset(
        Image(str(r["repository"]), str(r["digest"]))
        for r in rows
        if r.get("target") == target and r.get("repository") and r.get("digest")
    )


def referrer_status(runtime: Runtime) -> dict[str, dict[str, object]]:
    """Per target, where the referrer sweep stands and what its last pass found."""
    cursors = runtime.cursors.starting_with(CURSOR_PREFIX)
    return {c.name.removeprefix(CURSOR_PREFIX): c.to_status() for c in cursors}
