"""The backfill ETA's arithmetic (doctor's budget plan, issue 17): requests per bucket from
one listing, the slowest bound, the fleet's slots from the app's scale settings, bytes at
a copy throughput, and how the durations read."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from replicator.adapters.azure.functionapp import QueueConcurrency, queue_concurrency
from replicator.app.doctor.budget_checks import backfill_text
from replicator.cli.doctor import HOST_JSON
from replicator.domain.backfill import (
    AppScale,
    SourceCount,
    backfill_eta,
    duration,
    size,
    source_requests,
)
from replicator.domain.budgets import Limits

STANDARD_SOURCE = Limits(read=2500, referrers=250)  # 10,000 / 500 a minute at share 0.5 (capped)


@pytest.mark.parametrize(
    ("count", "read", "referrers"),
    [
        (SourceCount(1, 1, 1), 16, 3),
        (SourceCount(1, 3, 1), 18, 3),  # two more names for one digest: a HEAD each
        (SourceCount(2, 10, 10, listing_requests=4), 164, 30),
        (SourceCount(0, 0, 0, listing_requests=1), 1, 0),
    ],
    ids=["one image", "repeated digest", "listing counted", "empty registry"],
)
def test_requests_per_bucket(count: SourceCount, read: float, referrers: float) -> None:
    need = source_requests(count)
    assert (need.read, need.referrers) == (read, referrers)


@pytest.mark.parametrize(
    ("count", "jobs_per_minute", "budget", "bound", "minutes"),
    [
        # 6,200 jobs at 62 a minute (a Standard target's pace): 100 minutes, the job pace
        (SourceCount(10, 6200, 6200), 62, STANDARD_SOURCE, "jobs", 100.0),
        # the source's referrers budget is tighter than the job pace: 3 x 1,000 / 10
        (SourceCount(1, 1000, 1000), 1000, Limits(read=100_000, referrers=10), "referrers", 300),
        # reads: 16 x 100 + the listing's 400 = 2,000 at 20 a minute
        (
            SourceCount(1, 100, 100, listing_requests=400),
            1000,
            Limits(read=20, referrers=1000),
            "read",
            100,
        ),
        # no budget on the source (not an ACR, no REPLICATOR_RATE_LIMITS): the job pace
        (SourceCount(1, 600, 600), 600, Limits(), "jobs", 1.0),
    ],
    ids=["job pace", "referrers bound", "reads bound", "unbudgeted source"],
)
def test_the_slowest_bound_sets_the_eta(
    count: SourceCount, jobs_per_minute: int, budget: Limits, bound: str, minutes: float
) -> None:
    eta = backfill_eta(count, jobs_per_minute=jobs_per_minute, source_budget=budget)
    assert eta.bound == bound
    assert math.isclose(eta.minutes, minutes)


@pytest.mark.parametrize(
    ("scale", "per_instance", "slots"),
    [
        (AppScale(40, 2048, batch_size=16, new_batch_threshold=8), 24, 960),
        (AppScale(40, 2048, batch_size=16), 24, 960),  # newBatchThreshold: batchSize / 2
        (AppScale(10, 4096, batch_size=4, new_batch_threshold=0), 4, 40),
        (AppScale(None, None), 24, None),  # not a Flex app: no instance limit known
    ],
    ids=["host.json", "default threshold", "small batches", "no scale settings"],
)
def test_fleet_slots(scale: AppScale, per_instance: int, slots: int | None) -> None:
    assert scale.jobs_per_instance == per_instance
    assert scale.slots == slots


def test_the_job_time_at_which_the_fleet_becomes_the_bound() -> None:
    """960 jobs in flight at 62 a minute: a job may take 960 / 62 minutes (15.5) before
    the fleet, not the budget, limits the rate."""
    eta = backfill_eta(
        SourceCount(1, 62, 62),
        jobs_per_minute=62,
        source_budget=STANDARD_SOURCE,
        scale=AppScale(40, 2048, 16, 8),
    )
    assert eta.slot_minutes is not None
    assert math.isclose(eta.slot_minutes, 960 / 62)


@pytest.mark.parametrize(
    ("bytes_total", "mib_per_second", "minutes"),
    [
        (60 * 1024**3, 1024.0, 1.0),  # 60 GiB at 1 GiB/s
        (1024**4, 100.0, 1024**4 / (100 * 1024**2) / 60),
        (1024**3, None, None),  # no throughput given: bytes known, time not
        (None, 100.0, None),  # size unknown
    ],
    ids=["60 GiB at 1 GiB/s", "1 TiB at 100 MiB/s", "no throughput", "no size"],
)
def test_bytes_at_the_copy_throughput(
    bytes_total: int | None, mib_per_second: float | None, minutes: float | None
) -> None:
    eta = backfill_eta(
        SourceCount(1, 1, 1),
        jobs_per_minute=10,
        source_budget=Limits(),
        bytes_total=bytes_total,
        mib_per_second=mib_per_second,
    )
    if minutes is None:
        assert eta.bytes_minutes is None
    else:
        assert eta.bytes_minutes is not None
        assert math.isclose(eta.bytes_minutes, minutes)


def test_a_zero_pace_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        backfill_eta(SourceCount(1, 1, 1), jobs_per_minute=0, source_budget=Limits())


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (0.2, "under a minute"),
        (42, "42 min"),
        (90, "1.5 h"),
        (60 * 47, "47.0 h"),
        (60 * 24 * 3, "3.0 days"),
        (math.inf, "never"),
    ],
    ids=["seconds", "minutes", "hours", "just under two days", "days", "never"],
)
def test_durations_read(minutes: float, text: str) -> None:
    assert duration(minutes) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(500, "500 B"), (2048, "2.0 KiB"), (30 * 1024**3, "30.0 GiB"), (3 * 1024**5, "3072.0 TiB")],
    ids=["bytes", "KiB", "GiB", "beyond TiB"],
)
def test_sizes_read(n: int, text: str) -> None:
    assert size(n) == text


def test_the_doctor_line_names_counts_bound_and_bytes() -> None:
    count = SourceCount(120, 50_000, 20_000, listing_requests=520)
    eta = backfill_eta(
        count,
        jobs_per_minute=62,
        source_budget=STANDARD_SOURCE,
        bytes_total=2 * 1024**4,
        mib_per_second=200,
    )
    text = backfill_text(count, eta, 200)
    assert "50000 tags (20000 distinct manifests) in 120 repositories" in text
    assert "about 350520 reads and 60000 referrers calls" in text
    assert "13.4 h (the job pace is the bound)" in text
    assert "2.0 TiB stored: 2.9 h through copy targets at 200 MiB/s" in text


@pytest.mark.parametrize(
    ("text", "batch", "threshold"),
    [
        ('{"extensions": {"queues": {"batchSize": 4, "newBatchThreshold": 2}}}', 4, 2),
        ('{"extensions": {"queues": {"batchSize": 32}}}', 32, None),
        ('{"version": "2.0"}', 16, None),  # the Functions defaults
        ('{"extensions": {"queues": {"batchSize": "many"}}}', 16, None),
        ("not json", 16, None),
        (None, 16, None),  # no host.json
    ],
    ids=["both", "batch only", "silent", "not a number", "not json", "missing"],
)
def test_the_queue_triggers_concurrency_from_host_json(
    tmp_path: Path, text: str | None, batch: int, threshold: int | None
) -> None:
    path = tmp_path / "host.json"
    if text is not None:
        path.write_text(text)
    assert queue_concurrency(path) == QueueConcurrency(batch, threshold)


def test_the_packaged_host_json_is_the_one_doctor_reads() -> None:
    found = queue_concurrency(HOST_JSON)
    assert AppScale(40, 2048, found.batch_size, found.new_batch_threshold).jobs_per_instance == 24
