"""What ``status`` says about the request budgets (issue 17): per registry and bucket the
fleet's budget a minute, how much of it was leased in the last whole minute, whether a
429 has it paused (``throttled``), whether requests are waiting for it (``saturated``);
and the queue's ETA at the jobs a minute the budgets sustain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from replicator.app.runtime import Runtime
from replicator.domain.budgets import ARM, BUCKETS, jobs_per_minute, limits_for


def budget_status(runtime: Runtime, now: datetime) -> dict[str, Any]:
    settings = runtime.settings
    at = now.timestamp()
    states = {
        (s.registry, s.bucket): s for s in (runtime.budgets.rows() if runtime.budgets else [])
    }
    registries: dict[str, dict[str, Any]] = {}
    throttled = False
    for registry in [*sorted(settings.registries), ARM]:
        budget = limits_for(settings, registry)
        buckets: dict[str, Any] = {}
        for bucket in BUCKETS:
            rate = budget.rate(bucket)
            if rate is None:
                continue
            state = states.get((registry, bucket))
            paused = state is not None and state.throttled(at)
            throttled = throttled or paused
            buckets[bucket] = {
                "perMinute": rate,
                "usedLastMinute": round(state.used(), 3) if state else 0.0,
                "throttled": paused,
                "throttledUntil": (
                    datetime.fromtimestamp(state.held_until, UTC).isoformat()
                    if state and paused
                    else None
                ),
                "saturated": state is not None and state.saturated(at),
            }
        if buckets:
            registries[registry] = buckets
    per_minute = jobs_per_minute(settings)
    depth = runtime.queue.depth()
    return {
        "throttled": throttled,
        "jobsPerMinute": per_minute,
        "queueEtaMinutes": round(depth / per_minute, 1),
        "registries": registries,
    }
