"""The fleet's request budgets in the storage account the app already has.

One row per registry and bucket in the status table (partition ``_budget``, row key
``<login server>|<bucket>``; no new table, no new role), holding the budget's timeline as
one number (``Tat``: up to when it is handed out, wall-clock seconds) and the end of the
last 429 pause (``HeldUntil``). An instance *leases a slice* (``lease``): it reads the row,
takes the next stretch of the timeline (``replicator.domain.budgets.lease_slot``) and
writes the row back only if nobody else wrote it in between (``If-Match`` with the row's
ETag; on a conflict it reads again). ``BudgetPacer`` then hands the slice's tokens out
locally: one storage round trip (two calls) per slice, a few seconds' worth of tokens,
not per request. No instance count is configured or needed: Flex adds and removes
instances at will, each leases what it uses.

Worst-case overshoot (per registry and bucket, counted at the registry): in any window
of ``T`` seconds at most ``r * (T + burst + grace + skew) / 60 + 1`` requests for a budget
of ``r`` a minute, however many instances, where ``burst`` (2 s) is what an idle budget
saves, ``grace`` (1 s) how late a due token may still be sent, and ``skew`` the largest
difference between two instances' clocks (NTP-synchronised hosts: well under a second).
Stretches never overlap, so the bound does not grow with instances. For a 60 s window:
about 3 s worth, 5 % over. A slice expires unused at most once per instance and bucket
when demand stops (budget lost, never overshoot).

A 429 (``hold``) moves the row's timeline past the ``Retry-After``, so every instance's
next lease starts after the pause; an instance still spending a slice stops within one
slice (``slice_seconds``, 2 s). Storage failures are ``QueueUnavailableError``: the retry
layer treats them as transient.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from replicator.adapters.azure import telemetry
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageRetry
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.budget_pacer import BudgetPacer, Lease
from replicator.domain.budgets import BudgetState, lease_slot, limits_for
from replicator.domain.config import Settings, StorageConnection
from replicator.domain.errors import QueueUnavailableError
from replicator.domain.model import STATUS_TABLE

T = TypeVar("T")
BUDGET_PARTITION = "_budget"
MAX_CONFLICTS = 64  # optimistic writes lost in a row before a lease gives up (transient)


def budget_row(registry: str, bucket: str) -> str:
    return f"{registry}|{bucket}"


class TableLeases:
    """``replicator.adapters.budget_pacer.LeaseStore`` on the status table (Azure Table
    storage; Azurite locally), shared by every instance of the fleet."""

    def __init__(
        self,
        connection: StorageConnection,
        *,
        name: str = STATUS_TABLE,
        retry: StorageRetry = DEFAULT_RETRY,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = TableStatusStore(connection, name=name, retry=retry)
        self._clock = clock
        self._sleep = sleep
        self.conflicts = 0  # optimistic writes that lost (for tests and telemetry)

    def lease(
        self, registry: str, bucket: str, tokens: int, rate_per_minute: float, burst_seconds: float
    ) -> Lease:
        def take(row: dict[str, Any], now: float) -> Lease:
            start, row["Tat"] = lease_slot(
                float(row.get("Tat", 0.0)), now, tokens, rate_per_minute, burst_seconds
            )
            row["Rate"] = float(rate_per_minute)
            row["Leases"] = int(row.get("Leases", 0)) + 1
            row["Tokens"] = float(row.get("Tokens", 0.0)) + tokens
            _count_minute(row, now, tokens)
            return Lease(start, tokens, rate_per_minute, now)

        return self._update(registry, bucket, take)

    def hold(self, registry: str, bucket: str, seconds: float) -> None:
        def pause(row: dict[str, Any], now: float) -> None:
            until = now + max(0.0, seconds)
            row["Tat"] = max(float(row.get("Tat", 0.0)), until)
            row["HeldUntil"] = max(float(row.get("HeldUntil", 0.0)), until)
            row["Throttled"] = int(row.get("Throttled", 0)) + 1

        self._update(registry, bucket, pause)

    def rows(self) -> list[BudgetState]:
        """Every registry bucket the fleet has leased from (for ``status``)."""
        client = self.table.client
        entities = self.table.call(
            "budget read",
            lambda: list(
                client.query_entities("PartitionKey eq @pk", parameters={"pk": BUDGET_PARTITION})
            ),
        )
        now = self._clock()
        out = []
        for e in entities:
            row = dict(e)
            _count_minute(row, now, 0)
            registry, _, bucket = str(e["RowKey"]).rpartition("|")
            out.append(
                BudgetState(
                    registry=registry,
                    bucket=bucket,
                    rate_per_minute=float(row.get("Rate", 0.0)),
                    leased_last_minute=float(row.get("PrevMinuteTokens", 0.0)),
                    tat=float(row.get("Tat", 0.0)),
                    held_until=float(row.get("HeldUntil", 0.0)),
                )
            )
        return sorted(out, key=lambda r: (r.registry, r.bucket))

    def _update(
        self, registry: str, bucket: str, change: Callable[[dict[str, Any], float], T]
    ) -> T:
        """Read the row, ``change`` it, write it back if nobody wrote it meanwhile."""
        client = self.table.client
        key = budget_row(registry, bucket)
        for attempt in range(MAX_CONFLICTS):
            try:
                found = self.table.call("budget read", client.get_entity, BUDGET_PARTITION, key)
            except ResourceNotFoundError:
                found = None
            row: dict[str, Any] = {"PartitionKey": BUDGET_PARTITION, "RowKey": key}
            if found is not None:
                row.update({k: v for k, v in found.items() if k not in row})
            result = change(row, self._clock())
            try:
                if found is None:
                    self.table.call("budget write", client.create_entity, row)
                else:
                    self.table.replace_unless_modified("budget write", row, found)
            except (ResourceModifiedError, ResourceExistsError):
                self.conflicts += 1
                self._sleep(random.uniform(0, 0.005 * min(attempt + 1, 10)))
                continue
            return result
        raise QueueUnavailableError(
            f"budget {key}: {MAX_CONFLICTS} conflicting writes in a row; try again"
        )


def _count_minute(row: dict[str, Any], now: float, tokens: float) -> None:
    """Tokens leased in this wall-clock minute and the one before (``status``)."""
    minute = int(now // 60)
    seen = int(row.get("Minute", minute))
    if seen != minute:
        row["PrevMinuteTokens"] = float(row.get("MinuteTokens", 0.0)) if seen == minute - 1 else 0.0
        row["MinuteTokens"] = 0.0
    row["Minute"] = minute
    row["MinuteTokens"] = float(row.get("MinuteTokens", 0.0)) + tokens


def fleet_pacer(settings: Settings, *, retry: StorageRetry = DEFAULT_RETRY) -> BudgetPacer:
    """The worker's pacer: the budgets of ``settings``, shared by the fleet through its
    storage account (in process only when no storage is configured)."""
    store = TableLeases(settings.storage, retry=retry) if settings.storage is not None else None
    return BudgetPacer(
        lambda registry: limits_for(settings, registry),
        store,
        on_lease=telemetry.record_budget_used,
        on_throttled=telemetry.record_throttled,
    )
