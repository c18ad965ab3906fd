"""The retry layer's ``Pacer`` (``replicator.adapters.oci.transport``) backed by the budgets.

Every request to a registry takes one token of its bucket (``read``, ``write``, ``delete``,
``referrers``, ``token``) from the budget of ``replicator.domain.budgets.limits_for``. ACR
counts a referrers call against both ListReferrers and DataplaneRead: the other reads are
paced at ``read - referrers`` (``domain.budgets.pacing_limits``), so referrers calls and
the rest together never exceed ``read``, and one request never waits on two buckets. A
bucket without a limit is not paced.

Tokens are not fetched one by one: the pacer *leases a slice* of a bucket, a stretch of
the budget's timeline a few seconds long at most, from a ``LeaseStore``, and hands its
tokens out locally, one every ``60 / rate`` seconds. ``InProcessLeases`` (here) is the
store for one process; ``replicator.adapters.azure.budget_store.TableLeases`` is the
fleet's, the same algorithm in a storage-account table row under optimistic concurrency.
The store hands out the timeline in stretches that never overlap (``domain.budgets.
lease_slot``), however many instances lease, so the fleet stays within the budget.

Worst-case overshoot, per registry and bucket, in any window of ``T`` seconds at rate
``r`` a minute: at most ``r * (T + burst + grace) / 60 + 1`` requests, whatever the number
of instances. ``burst`` (default 2 s) is what an idle budget saves up; ``grace`` (default
1 s) is how late a token may still be used after it fell due (one due longer ago is
dropped, never saved). For a minute at the defaults: 3 s worth, 5 % over. The fleet store
adds the instances' clock skew (``r * skew / 60``). What leasing costs instead: a slice
that is not used up is lost when it expires (at most one slice per instance and bucket
when demand stops); slices grow while they are used up and shrink when they are not.

A 429 pauses the registry's bucket (``referrers`` and ``read`` for a referrers call) for
its ``Retry-After`` (``DEFAULT_HOLD`` without one): the slice in hand is dropped and the
store records the pause, so every instance's next lease starts after it. Instances that
hold a slice already stop within one slice (``slice_seconds``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from replicator.domain.budgets import (
    BUCKETS,
    DEFAULT_BURST_SECONDS,
    Bucket,
    Limits,
    lease_slot,
    pacing_limits,
)

DEFAULT_SLICE_SECONDS = 2.0
DEFAULT_GRACE_SECONDS = 1.0
DEFAULT_HOLD = 1.0  # a 429 without Retry-After pauses the bucket this long


@dataclass(frozen=True)
class Lease:
    """``tokens`` of a bucket, due one every ``60 / rate_per_minute`` s from ``start``
    (wall-clock seconds), leased at ``leased_at``."""

    start: float
    tokens: int
    rate_per_minute: float
    leased_at: float


class LeaseStore(Protocol):
    """Where the budget's timeline is kept: one process (``InProcessLeases``) or the fleet
    (``replicator.adapters.azure.budget_store.TableLeases``). Times are wall-clock seconds
    (``time.time``), the same clock as the pacer's."""

    def lease(
        self, registry: str, bucket: str, tokens: int, rate_per_minute: float, burst_seconds: float
    ) -> Lease: ...

    def hold(self, registry: str, bucket: str, seconds: float) -> None:
        """Nothing of this bucket is due for ``seconds`` from now (a 429's Retry-After)."""
        ...


class InProcessLeases:
    """The budget's timeline in memory: pacing for one process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat: dict[tuple[str, str], float] = {}
        self.held_until: dict[tuple[str, str], float] = {}

    def lease(
        self, registry: str, bucket: str, tokens: int, rate_per_minute: float, burst_seconds: float
    ) -> Lease:
        with self._lock:
            now = self._clock()
            key = (registry, bucket)
            start, self._tat[key] = lease_slot(
                self._tat.get(key, 0.0), now, tokens, rate_per_minute, burst_seconds
            )
            return Lease(start, tokens, rate_per_minute, now)

    def hold(self, registry: str, bucket: str, seconds: float) -> None:
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            key = (registry, bucket)
            self._tat[key] = max(self._tat.get(key, 0.0), until)
            self.held_until[key] = max(self.held_until.get(key, 0.0), until)


@dataclass
class _Slice:
    lease: Lease
    interval: float  # seconds between tokens
    next: int = 0  # the next token's index
    spent: int = 0  # tokens handed out (the rest were dropped, due too long ago)

    def due(self, index: int) -> float:
        """When token ``index`` falls due (those due before the lease: at the lease)."""
        return max(self.lease.start + index * self.interval, self.lease.leased_at)

    def first_usable(self, earliest_due: float) -> int:
        """The first token from ``next`` on that fell due at ``earliest_due`` or later."""
        if self.lease.leased_at >= earliest_due:
            return self.next
        skip = math.ceil((earliest_due - self.lease.start) / self.interval - 1e-9)
        return max(self.next, skip)


@dataclass
class BucketUse:
    """What one process did with one registry's bucket (``status``, telemetry)."""

    rate_per_minute: float | None
    taken: int = 0
    waited_seconds: float = 0.0
    leases: int = 0
    throttled: int = 0
    held_until: float = 0.0
    dropped: int = 0  # leased tokens not used: due longer than ``grace`` ago


class BudgetPacer:
    """A ``Pacer``: ``before`` answers how long to wait for a token of the budget,
    ``throttled`` pauses the bucket (here and, through the store, the fleet)."""

    def __init__(
        self,
        limits: Callable[[str], Limits],
        store: LeaseStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        slice_seconds: float = DEFAULT_SLICE_SECONDS,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        default_hold: float = DEFAULT_HOLD,
        on_lease: Callable[[str, str, int], None] | None = None,
        on_throttled: Callable[[str, str], None] | None = None,
    ) -> None:
        self._limits = limits
        self._on_lease = on_lease  # telemetry: (registry, bucket, tokens) per slice leased
        self._on_throttled = on_throttled  # telemetry: (registry, bucket) per 429
        self.store: LeaseStore = store if store is not None else InProcessLeases(clock)
        self._clock = clock
        self.slice_seconds = slice_seconds
        self.burst_seconds = burst_seconds
        self.grace_seconds = grace_seconds
        self.default_hold = default_hold
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._slices: dict[tuple[str, str], _Slice] = {}
        self._sizes: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], float] = {}
        self._limits_cache: dict[str, Limits] = {}
        self.use: dict[tuple[str, str], BucketUse] = {}

    # -- the Pacer protocol ---------------------------------------------------------------
    def before(self, registry: str, bucket: str) -> float:
        """Seconds to wait before sending one request of ``bucket`` to ``registry``."""
        send = self._take(registry, self._draw(registry, bucket), self._clock())
        return max(0.0, send - self._clock())  # a lease took time: from now, not then

    def throttled(self, registry: str, bucket: str, retry_after: float | None) -> None:
        seconds = self.default_hold if retry_after is None else max(0.0, retry_after)
        if self._on_throttled is not None:
            self._on_throttled(registry, bucket)
        for name in _slowed(bucket):
            key = (registry, name)
            with self._key_lock(key):
                until = self._clock() + seconds
                self._held[key] = max(self._held.get(key, 0.0), until)
                self._slices.pop(key, None)
                use = self._use(key)
                use.throttled += 1
                use.held_until = self._held[key]
                if use.rate_per_minute is not None:
                    self.store.hold(registry, name, seconds)

    # -- inside ---------------------------------------------------------------------------
    def limits(self, registry: str) -> Limits:
        """The budget paced by: ``read`` less what ``referrers`` may spend (see module)."""
        found = self._limits_cache.get(registry)
        if found is None:
            found = self._limits_cache[registry] = pacing_limits(self._limits(registry))
        return found

    def _draw(self, registry: str, bucket: str) -> Bucket:
        if bucket == "referrers":
            return "referrers" if self.limits(registry).referrers is not None else "read"
        return bucket if bucket in BUCKETS else "read"

    def _take(self, registry: str, bucket: Bucket, not_before: float) -> float:
        """When this request may go, as far as ``bucket`` is concerned (wall clock)."""
        key = (registry, bucket)
        rate = self.limits(registry).rate(bucket)
        with self._key_lock(key):
            now = self._clock()
            wanted = max(now, not_before, self._held.get(key, 0.0))
            use = self._use(key)
            use.taken += 1
            if rate is None:
                use.waited_seconds += wanted - now
                return wanted
            current = self._slices.get(key)
            if current is not None:
                index = current.first_usable(wanted - self.grace_seconds)
                if index < current.lease.tokens:
                    return self._hand_out(key, current, index, wanted, now)
            if current is not None:
                use.dropped += current.lease.tokens - current.next
            lease = self.store.lease(
                registry, bucket, self._size(key, rate), rate, self.burst_seconds
            )
            use.leases += 1
            if self._on_lease is not None:
                self._on_lease(registry, bucket, lease.tokens)
            fresh = self._slices[key] = _Slice(lease, 60.0 / lease.rate_per_minute)
            index = fresh.first_usable(max(wanted, self._clock()) - self.grace_seconds)
            if index >= lease.tokens:  # leased further back than grace: use its last one
                index = lease.tokens - 1
            return self._hand_out(key, fresh, index, wanted, now)

    def _hand_out(
        self, key: tuple[str, str], s: _Slice, index: int, wanted: float, now: float
    ) -> float:
        self._use(key).dropped += index - s.next
        s.next = index + 1
        s.spent += 1
        send = max(s.due(index), wanted)
        self._use(key).waited_seconds += send - now
        return send

    def _size(self, key: tuple[str, str], rate: float) -> int:
        """The next slice's tokens: twice the last while slices are used up, what was
        used when one was not, never more than ``slice_seconds`` worth."""
        most = max(1, int(rate * self.slice_seconds / 60.0))
        last = self._slices.get(key)
        size = self._sizes.get(key, max(1, most // 4))
        if last is not None:
            size = size * 2 if last.spent >= last.lease.tokens else max(1, last.spent)
        size = min(most, size)
        self._sizes[key] = size
        return size

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            found = self._key_locks.get(key)
            if found is None:
                found = self._key_locks[key] = threading.Lock()
            return found

    def _use(self, key: tuple[str, str]) -> BucketUse:
        found = self.use.get(key)
        if found is None:
            bucket = cast(Bucket, key[1])
            found = self.use[key] = BucketUse(self.limits(key[0]).rate(bucket))
        return found


def _slowed(bucket: str) -> tuple[Bucket, ...]:
    """The buckets a 429 pauses: a referrers call's may be ACR's read bucket's."""
    if bucket == "referrers":
        return ("referrers", "read")
    return (bucket,) if bucket in BUCKETS else ("read",)
