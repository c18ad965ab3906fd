"""How long a full backfill of the source takes at the fleet's budget (doctor, issue 17):
the ETA a migration needs before it starts.

Pure arithmetic over values doctor gathers: the source's listing (catalog + tags, as
reconcile lists it), the jobs a minute the budgets sustain (``budgets.jobs_per_minute``),
the deployed app's scale settings (``functionAppConfig.scaleAndConcurrency`` and the queue
trigger's per-instance concurrency from host.json), and for bytes the registry's size with
a copy throughput (ACR publishes no bandwidth figure, so that one is a setting).

Requests: one job per tag; a tag whose digest another tag already brought costs a manifest
``HEAD`` (the copy finds it present), every other one ``budgets.SOURCE_REQUESTS_PER_JOB``.
The time is the slowest of: the jobs at ``jobs_per_minute`` (the pace reconcile and
``sync --enqueue`` spread them at, which accounts for the targets' budgets too) and each
source bucket's requests at its budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from replicator.domain.budgets import BUCKETS, SOURCE_REQUESTS_PER_JOB, Limits

MIB = 1024 * 1024
# Functions' queue trigger defaults (host.json extensions.queues): batchSize 16,
# newBatchThreshold batchSize / 2 on a single-core instance; an instance runs at most
# batchSize + newBatchThreshold messages of one queue function at once.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class SourceCount:
    """What one listing of the source found."""

    repositories: int
    tags: int
    manifests: int  # distinct digests among the tags
    listing_requests: int = 0
    unread: int = 0  # repositories (or the catalog) the listing could not read


@dataclass(frozen=True)
class AppScale:
    """The deployed app's scale settings (``None``: not given or not set)."""

    maximum_instance_count: int | None
    instance_memory_mb: int | None
    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int | None = None

    @property
    def jobs_per_instance(self) -> int:
        """Queue messages one instance runs at once: batchSize + newBatchThreshold."""
        threshold = (
            self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold
        )
        return max(1, self.batch_size + max(0, threshold))

    @property
    def slots(self) -> int | None:
        """Jobs the whole fleet runs at once, at its largest."""
        if self.maximum_instance_count is None:
            return None
        return self.maximum_instance_count * self.jobs_per_instance


@dataclass(frozen=True)
class BackfillEta:
    jobs: int
    source_requests: Limits  # per bucket, the listing included in read
    minutes: float  # the slowest of the bounds below
    bound: str  # what sets ``minutes``: "jobs" or a source bucket
    jobs_per_minute: int
    # A job may take this long before the fleet's slots, not the budget, become the bound
    slot_minutes: float | None = None
    bytes_total: int | None = None
    bytes_minutes: float | None = None


def source_requests(count: SourceCount) -> Limits:
    """Requests a full backfill makes on the source, per bucket."""
    fresh = count.manifests
    repeats = max(0, count.tags - count.manifests)
    per = SOURCE_REQUESTS_PER_JOB
    return Limits(
        read=(per.read or 0) * fresh + repeats + count.listing_requests,
        referrers=(per.referrers or 0) * fresh,
    )


def backfill_eta(
    count: SourceCount,
    *,
    jobs_per_minute: int,
    source_budget: Limits,
    scale: AppScale | None = None,
    bytes_total: int | None = None,
    mib_per_second: float | None = None,
) -> BackfillEta:
    """The backfill's ETA; ``mib_per_second`` is the whole fleet's copy throughput."""
    if jobs_per_minute <= 0:
        raise ValueError("jobs_per_minute must be positive")
    needed = source_requests(count)
    bound, minutes = "jobs", count.tags / jobs_per_minute
    for bucket in BUCKETS:
        rate, want = source_budget.rate(bucket), needed.rate(bucket)
        if rate and want and want / rate > minutes:
            bound, minutes = bucket, want / rate
    slots = scale.slots if scale is not None else None
    bytes_minutes = None
    if bytes_total is not None and mib_per_second and mib_per_second > 0:
        bytes_minutes = bytes_total / (mib_per_second * MIB) / 60
    return BackfillEta(
        jobs=count.tags,
        source_requests=needed,
        minutes=minutes,
        bound=bound,
        jobs_per_minute=jobs_per_minute,
        slot_minutes=slots / jobs_per_minute if slots else None,
        bytes_total=bytes_total,
        bytes_minutes=bytes_minutes,
    )


def duration(minutes: float) -> str:
    """``42 min``, ``3.5 h``, ``2.1 days``."""
    if not math.isfinite(minutes):
        return "never"
    if minutes < 90:
        return f"{max(minutes, 0):.0f} min" if minutes >= 1 else "under a minute"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def size(n: int) -> str:
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
