"""The fleet's budget in Azurite's table: instances (separate interpreters, as Flex
instances are) leasing one registry bucket at once never get overlapping stretches, and
the requests they send stay within the budget plus the overshoot the module states; a
429 recorded by one pauses the others."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from devstack.localstack import Azurite
from devstack.throttling import most_in_window
from replicator.adapters.azure.budget_store import (
    BUDGET_PARTITION,
    TableLeases,
    budget_row,
    fleet_pacer,
)
from replicator.adapters.budget_pacer import DEFAULT_GRACE_SECONDS, BudgetPacer, Lease
from replicator.domain.budgets import DEFAULT_BURST_SECONDS, Limits
from replicator.domain.config import StorageConnection, load_settings

RATE = 600.0  # a minute: 10 a second, scaled down from ACR's thousands


def _store(connection_string: str) -> TableLeases:
    return TableLeases(StorageConnection(connection_string=connection_string))


def _instance(
    connection_string: str, registry: str, start_at: float, seconds: float
) -> list[float]:
    """One fleet instance: 3 concurrent jobs sending as fast as the pacer lets them."""
    pacer = BudgetPacer(lambda _r: Limits(read=RATE), _store(connection_string))
    sent: list[float] = []
    lock = threading.Lock()

    def job() -> None:
        while True:
            wait = pacer.before(registry, "read")
            time.sleep(wait)
            now = time.time()
            if now >= start_at + seconds:
                return
            with lock:
                sent.append(now)

    time.sleep(max(0.0, start_at - time.time()))
    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def test_concurrent_leases_get_stretches_that_never_overlap(azurite: Azurite) -> None:
    registry = f"r{uuid.uuid4().hex[:8]}.azurecr.io"
    stores = [_store(azurite.connection_string) for _ in range(6)]

    def lease(i: int) -> Lease:
        return stores[i % len(stores)].lease(registry, "read", 5, RATE, DEFAULT_BURST_SECONDS)

    with ThreadPoolExecutor(12) as pool:
        leases = sorted(pool.map(lease, range(120)), key=lambda x: x.start)
    assert sum(s.conflicts for s in stores) > 0  # they did race
    for before, after in itertools.pairwise(leases):
        assert after.start >= before.start + 5 * 60 / RATE - 1e-6
    entity = stores[0].table.client.get_entity(BUDGET_PARTITION, budget_row(registry, "read"))
    assert (entity["Leases"], entity["Tokens"], entity["Rate"]) == (120, 600.0, RATE)
    state = next(r for r in stores[0].rows() if r.registry == registry)
    assert (state.bucket, state.rate_per_minute) == ("read", RATE)
    assert state.saturated(time.time() - 5.0)  # 60 s worth handed out at once


def test_instances_in_their_own_interpreters_stay_within_the_stated_overshoot(
    azurite: Azurite,
) -> None:
    registry = f"r{uuid.uuid4().hex[:8]}.azurecr.io"
    seconds = 8.0
    start_at = time.time() + 4.0  # after every interpreter has started
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(3) as pool:
        runs = pool.starmap(
            _instance, [(azurite.connection_string, registry, start_at, seconds)] * 3
        )
    sent = sorted(t for run in runs for t in run)
    assert all(run for run in runs)  # every instance got budget
    overshoot_seconds = DEFAULT_BURST_SECONDS + DEFAULT_GRACE_SECONDS  # one host: no skew
    for window in (1.0, 4.0, seconds):
        assert most_in_window(sent, window) <= RATE * (window + overshoot_seconds) / 60 + 1
    # and the budget is used: at least 90 % of the run's 80 requests
    assert len(sent) >= 0.9 * RATE * seconds / 60


def test_a_429_recorded_by_one_instance_pauses_the_others(azurite: Azurite) -> None:
    registry = f"r{uuid.uuid4().hex[:8]}.azurecr.io"
    one, other = _store(azurite.connection_string), _store(azurite.connection_string)
    one.lease(registry, "read", 1, RATE, DEFAULT_BURST_SECONDS)
    before = time.time()
    one.hold(registry, "read", 30.0)
    lease = other.lease(registry, "read", 1, RATE, DEFAULT_BURST_SECONDS)
    assert lease.start >= before + 30.0
    assert lease.leased_at < before + 30.0
    row = next(r for r in other.rows() if r.registry == registry)
    assert row.throttled(time.time()) and row.held_until >= before + 30.0
    # another bucket of the same registry is not paused
    assert other.lease(registry, "write", 1, RATE, 0.0).start <= time.time()


def test_the_worker_pacer_uses_the_settings_budget_and_the_account(azurite: Azurite) -> None:
    registry = f"r{uuid.uuid4().hex[:8]}.azurecr.io"
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": registry,
            "REPLICATOR_TARGETS": "dr.azurecr.io",
            "REPLICATOR_RATE_LIMITS": f'{{"{registry}": {{"write": 120}}}}',
            "AzureWebJobsStorage": azurite.connection_string,
        }
    )
    pacer = fleet_pacer(settings)
    assert isinstance(pacer.store, TableLeases)
    pacer.before(registry, "write")
    row = next(r for r in pacer.store.rows() if r.registry == registry)
    assert (row.bucket, row.rate_per_minute) == ("write", 60.0)  # 120 times the 0.5 share


def test_the_runtime_paces_the_registry_clients_through_the_fleet_store(azurite: Azurite) -> None:
    from replicator.app.runtime import build_runtime

    settings = load_settings(
        {
            "REPLICATOR_SOURCE": "src.azurecr.io",
            "REPLICATOR_TARGETS": "dr.azurecr.io",
            "AzureWebJobsStorage": azurite.connection_string,
        }
    )
    runtime = build_runtime(settings)
    try:
        pacer = runtime.registries.client("src.azurecr.io").retry.pacer  # type: ignore[attr-defined]
        assert isinstance(pacer, BudgetPacer) and isinstance(pacer.store, TableLeases)
        assert pacer.limits("src.azurecr.io").read == 5_000 - 250  # Standard, half, less referrers
    finally:
        runtime.close()
