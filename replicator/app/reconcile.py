"""Reconcile: list both sides, plan, and close the drift through the jobs queue.

The timer runs ``run_reconcile(runtime)``; ``resync`` and ``sync --enqueue`` reuse its
parts. Jobs go out paced (``Pacing``): in batches with pauses, so 10,000 tags do not hit
the queue in one burst, and spread over minutes with the message visibility delay, so the
workers do not take more jobs than the budgets could serve
(``replicator.domain.budgets.enqueue_per_minute``; the registry clients' budget pacer
keeps the requests themselves within the budgets). A job already queued (same job id)
costs the worker one status read, nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from replicator.adapters.oci.listing import Allows, Listing, RegistryLister, RegistryRequester
from replicator.app.referrer_sweep import check_referrers
from replicator.app.verify_sweep import TargetVerify, sweep_verify
from replicator.domain.budgets import enqueue_per_minute
from replicator.domain.config import Settings
from replicator.domain.filters import Filters, may_hold_allowed
from replicator.domain.model import CopyJob, Origin, TagEntry
from replicator.domain.planning import Plan, jobs_for, plan

if TYPE_CHECKING:
    from replicator.app.referrer_sweep import TargetReferrers
    from replicator.app.runtime import Runtime

log = logging.getLogger(__name__)


class ClientSource(Protocol):
    def client(self, host: str) -> RegistryRequester: ...


class JobSender(Protocol):
    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None: ...


@dataclass(frozen=True)
class Pacing:
    """At most ``batch`` messages back to back, then ``pause_seconds``; job *i* becomes
    visible ``(i // jobs_per_minute)`` minutes later, at most ``max_spread_seconds``."""

    batch: int = 100
    pause_seconds: float = 0.5
    jobs_per_minute: int = 600
    max_spread_seconds: int = 6 * 3600  # beyond that, the last minute takes the rest

    def delay_for(self, index: int) -> int:
        return min((index // max(1, self.jobs_per_minute)) * 60, self.max_spread_seconds)


@dataclass(frozen=True)
class TargetDrift:
    target: str
    plan: Plan | None  # None: the target could not be listed at all
    errors: tuple[str, ...] = ()
    entries: tuple[TagEntry, ...] = field(default=(), repr=False)  # the target's listing


@dataclass(frozen=True)
class ReconcileReport:
    source_tags: int
    targets: tuple[TargetDrift, ...]
    enqueued: int = 0
    errors: tuple[str, ...] = ()  # every listing problem, source and targets
    jobs: tuple[CopyJob, ...] = field(default=(), repr=False)
    source_entries: tuple[TagEntry, ...] = field(default=(), repr=False)  # the source's listing
    referrers: tuple[TargetReferrers, ...] = ()  # referrer drift (replicator.app.referrer_sweep)
    verify: tuple[TargetVerify, ...] = ()  # REPLICATOR_VERIFY_SWEEP (replicator.app.verify_sweep)

    @property
    def complete(self) -> bool:
        return not self.errors

    def drift(self) -> dict[str, dict[str, int]]:
        """``{target: {"missing": n, "stale": n, "extra": n}}`` (-1s when unknown)."""
        unknown = {"missing": -1, "stale": -1, "extra": -1}
        found = {d.target: d.plan.counts() if d.plan else unknown for d in self.targets}
        for audit in self.verify:  # what the verify sweep found under in-step tags
            if found.get(audit.target, unknown)["missing"] >= 0:
                found[audit.target] = {**found[audit.target]}
                found[audit.target]["missing"] += audit.missing
        return found


def compare(
    registries: ClientSource,
    source: str,
    targets: Sequence[str],
    filters: Filters,
    settings: Settings,
    *,
    repositories: Sequence[str] | None = None,
    allows: Allows | None = None,
    concurrency: int = 16,
) -> ReconcileReport:
    """List the source and each target (concurrently) and plan each target. Repositories
    that either side could not read are left out of the plan: they are not drift."""

    def allowed(repository: str, tag: str) -> bool:
        return filters.allows(repository, tag) and (allows is None or allows(repository, tag))

    def list_one(host: str) -> Listing:
        lister = RegistryLister(registries.client(host), host, concurrency=concurrency)
        return lister.listing(repositories, allowed, lambda r: may_hold_allowed(filters, r))

    with ThreadPoolExecutor(1 + len(targets), thread_name_prefix="side") as pool:
        listings = list(pool.map(list_one, [source, *targets]))
    have, errors = listings[0], list(listings[0].errors)
    drifts = []
    for target, want in zip(targets, listings[1:], strict=True):
        errors.extend(want.errors)
        if "" in have.failed or "" in want.failed:
            drifts.append(TargetDrift(target, None, want.errors))
            continue
        unread = have.failed | want.failed
        made = plan(
            (e for e in have.entries if e.repository not in unread),
            (e for e in want.entries if e.repository not in unread),
            filters,
            settings.delete_policy,
            source=source,
            target=target,
        )
        drifts.append(TargetDrift(target, made, want.errors, want.entries))
    return ReconcileReport(
        len(have.entries), tuple(drifts), errors=tuple(errors), source_entries=have.entries
    )


def enqueue(
    queue: JobSender,
    jobs: Iterable[CopyJob],
    pacing: Pacing = Pacing(),
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send ``jobs`` paced; returns how many were sent."""
    sent = 0
    for index, job in enumerate(jobs):
        if index and index % max(1, pacing.batch) == 0:
            sleep(pacing.pause_seconds)
        queue.send(job, delay_seconds=pacing.delay_for(index))
        sent += 1
    return sent


class UntagVerdicts(Protocol):
    def untag_refused(self, target: str) -> str | None: ...


def refusing_untag(verdicts: UntagVerdicts | None, report: ReconcileReport) -> frozenset[str]:
    """The planned targets known to refuse tag deletes (their retagged extras get no job)."""
    if verdicts is None or not report.targets:
        return frozenset()
    return frozenset(d.target for d in report.targets if verdicts.untag_refused(d.target))


def plan_jobs(
    report: ReconcileReport,
    settings: Settings,
    origin: Origin,
    *,
    untag_refused: frozenset[str] = frozenset(),
) -> list[CopyJob]:
    """The jobs of every planned target, interleaved by target so each one progresses."""
    per_target = [
        jobs_for(d.plan, settings, origin, untag_refused=untag_refused)
        for d in report.targets
        if d.plan
    ]
    jobs: list[CopyJob] = []
    for row in range(max((len(j) for j in per_target), default=0)):
        jobs.extend(j[row] for j in per_target if row < len(j))
    return jobs


def run_reconcile(
    runtime: Runtime,
    *,
    pacing: Pacing | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconcileReport:
    """Plan every configured target, enqueue a job per missing or stale tag (and per extra
    under a propagating delete policy), record the drift for ``status``, log a summary.
    Jobs are spread at ``enqueue_per_minute`` (as many as the budgets could serve of the
    cheapest jobs; the request pacer limits the rest) unless ``pacing``."""
    settings = runtime.settings
    pacing = pacing or Pacing(jobs_per_minute=enqueue_per_minute(settings))
    filters = Filters(settings.include, settings.exclude)
    targets = [t.login_server for t in settings.targets]
    report = compare(runtime.registries, settings.source, targets, filters, settings)
    refused = refusing_untag(runtime.status, report)
    jobs = plan_jobs(report, settings, "reconcile", untag_refused=refused)
    sent = enqueue(runtime.queue, jobs, pacing, sleep)
    referrers = check_referrers(runtime, report)  # bounded by the referrers budget
    sent += enqueue(runtime.queue, referrers.jobs, pacing, sleep)
    jobs += referrers.jobs
    audited = sweep_verify(runtime, report)  # REPLICATOR_VERIFY_SWEEP images (off: none)
    sent += enqueue(runtime.queue, audited.jobs, pacing, sleep)
    jobs += audited.jobs
    report = replace(
        report,
        enqueued=sent,
        jobs=tuple(jobs),
        referrers=referrers.targets,
        verify=audited.targets,
    )
    runtime.status.record_reconcile(report.drift(), sent)
    kept = {d.target: len(d.plan.retagged) for d in report.targets if d.plan}
    kept = {
        t: n for t, n in kept.items() if n and (t in refused or not settings.delete_policy.deletes)
    }
    log.log(
        logging.WARNING if report.errors else logging.INFO,
        "reconcile %s: %d source tags; drift %s; referrers %s; %d jobs enqueued; "
        "%d listing errors%s%s",
        settings.source,
        report.source_tags,
        report.drift(),
        {r.target: r.counts() for r in report.referrers},
        sent,
        len(report.errors),
        f" (first: {report.errors[0]})" if report.errors else "",
        f"; extra tags left in place (source holds their digest, target keeps them): {kept}"
        if kept
        else "",
    )
    return report
