"""The budget-backed Pacer on a fake clock: pacing, the fleet bound over a shared store,
referrers, 429 pauses, and what the retry layer asks it (no wall-clock time asserted)."""

from __future__ import annotations

import heapq

import httpx
import pytest

from devstack.throttling import FakeClock, most_in_window
from replicator.adapters.budget_pacer import BudgetPacer, InProcessLeases, Lease
from replicator.adapters.oci.transport import RetryPolicy, bucket_of
from replicator.domain.budgets import Limits, pacing_limits

REG = "src.azurecr.io"


class CountingStore(InProcessLeases):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.leases: list[Lease] = []
        self.holds: list[tuple[str, str, float]] = []

    def lease(
        self, registry: str, bucket: str, tokens: int, rate_per_minute: float, burst_seconds: float
    ) -> Lease:
        lease = super().lease(registry, bucket, tokens, rate_per_minute, burst_seconds)
        self.leases.append(lease)
        return lease

    def hold(self, registry: str, bucket: str, seconds: float) -> None:
        self.holds.append((registry, bucket, seconds))
        super().hold(registry, bucket, seconds)


def pacer(limits: Limits, clock: FakeClock, store: InProcessLeases | None = None) -> BudgetPacer:
    return BudgetPacer(lambda _registry: limits, store, clock=clock)


def drive(
    pacers: list[BudgetPacer],
    clock: FakeClock,
    *,
    workers_each: int,
    until: float,
    bucket: str = "read",
    lag: float = 0.0,
) -> list[float]:
    """Workers (``workers_each`` per pacer, as one instance's concurrent jobs) that ask,
    wait as told, send (``lag`` late), and ask again, until ``until`` seconds have passed.
    Returns every send time."""
    start = clock.now
    events = [(start, p, w) for p in range(len(pacers)) for w in range(workers_each)]
    heapq.heapify(events)
    sent: list[float] = []
    while events:
        at, p, w = heapq.heappop(events)
        if at - start >= until:
            continue
        clock.now = at
        send = at + pacers[p].before(REG, bucket) + lag
        sent.append(send)
        heapq.heappush(events, (send, p, w))
    return sorted(sent)


def test_one_process_is_paced_evenly_with_a_short_burst() -> None:
    clock = FakeClock(1_700_000_000.0)
    p = pacer(Limits(read=600), clock)  # 10 a second
    sent = drive([p], clock, workers_each=8, until=120)
    # burst 2 s + grace 1 s: at most 30 + 1 over the 600 of any minute, 10 a second after it
    assert most_in_window(sent, 60) <= 600 + 31
    assert most_in_window(sent[len(sent) // 2 :], 1.0) <= 10 + 1
    assert len(sent) >= 0.95 * 600 * 2  # the budget is used, not wasted


@pytest.mark.parametrize("instances", [1, 3, 8])
def test_a_fleet_sharing_one_store_stays_within_budget_plus_the_stated_overshoot(
    instances: int,
) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = InProcessLeases(clock)
    rate = 300.0
    pacers = [pacer(Limits(read=rate), clock, store) for _ in range(instances)]
    sent = drive(pacers, clock, workers_each=4, until=180, lag=0.4)  # sent 0.4 s late
    # the module's bound: r * (T + burst + grace) / 60 + 1, whatever the instance count
    assert most_in_window(sent, 60) <= rate * (60 + 2 + 1) / 60 + 1
    assert len(sent) >= 0.9 * rate * 3


def test_slices_keep_storage_round_trips_far_below_requests() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    p = pacer(Limits(read=6000), clock, store)  # 100 a second: slices of up to 200
    sent = drive([p], clock, workers_each=16, until=60)
    assert len(sent) > 5000
    assert len(store.leases) < len(sent) / 50


def test_an_unlimited_bucket_is_not_paced_and_asks_no_store() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    p = pacer(Limits(write=60), clock, store)
    assert [p.before(REG, "read") for _ in range(1000)] == [0.0] * 1000
    assert store.leases == []


def test_a_429_pauses_the_bucket_for_every_instance_sharing_the_store() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    one, other = (pacer(Limits(read=600, write=60), clock, store) for _ in range(2))
    assert one.before(REG, "read") == 0.0
    assert other.before(REG, "read") == 0.0
    one.throttled(REG, "read", 30.0)
    assert one.before(REG, "read") >= 30.0
    # the other instance finishes the slice in hand (at most slice_seconds), then waits
    waits = [other.before(REG, "read") for _ in range(40)]
    assert waits[0] < 2.0 and waits[-1] >= 30.0
    assert other.before(REG, "write") < 2.0  # another bucket is not paused
    assert store.holds == [(REG, "read", 30.0)]
    assert one.use[(REG, "read")].throttled == 1


def test_a_429_without_retry_after_pauses_briefly_and_an_unlimited_one_locally() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    p = pacer(Limits(write=60), clock, store)
    p.throttled(REG, "read", None)  # read has no limit: this process pauses, no store
    assert p.before(REG, "read") == pytest.approx(1.0)
    assert store.holds == []


def test_referrers_calls_take_one_token_and_the_other_reads_leave_them_room() -> None:
    limits = Limits(read=10_000, referrers=500)
    assert pacing_limits(limits) == Limits(read=9_500, referrers=500)
    assert pacing_limits(Limits(read=100, referrers=400)) == Limits(read=50, referrers=50)
    assert pacing_limits(Limits(referrers=5)) == Limits(referrers=5)
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    p = pacer(Limits(read=600, referrers=60), clock, store)
    referrer_waits = [p.before(REG, "referrers") for _ in range(5)]
    assert {lease.rate_per_minute for lease in store.leases} == {60}
    assert referrer_waits == sorted(referrer_waits) and referrer_waits[-1] > 0
    assert p.before(REG, "read") == 0.0
    assert {lease.rate_per_minute for lease in store.leases} == {60, 540}
    p.throttled(REG, "referrers", 10.0)  # its 429 slows both
    assert {(b, s) for _r, b, s in store.holds} == {("referrers", 10.0), ("read", 10.0)}
    assert p.before(REG, "read") >= 10.0


def test_a_referrers_call_without_a_referrers_limit_draws_from_read() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(clock)
    p = pacer(Limits(read=60), clock, store)
    p.before(REG, "referrers")
    assert [lease.rate_per_minute for lease in store.leases] == [60]
    assert p.use[(REG, "read")].taken == 1


@pytest.mark.parametrize(
    ("method", "path", "bucket"),
    [
        ("GET", "/v2/a/manifests/latest", "read"),
        ("HEAD", "/v2/a/blobs/sha256:00", "read"),
        ("GET", "/v2/a/referrers/sha256:00", "referrers"),
        ("PUT", "/v2/a/manifests/latest", "write"),
        ("POST", "/v2/a/blobs/uploads/", "write"),
        ("DELETE", "/v2/a/manifests/sha256:00", "delete"),
        ("POST", "/oauth2/token", "token"),
        ("GET", "/oauth2/token", "token"),
    ],
)
def test_bucket_of_a_request(method: str, path: str, bucket: str) -> None:
    assert bucket_of(method, path) == bucket


class Recording:
    def __init__(self, wait: float = 0.0) -> None:
        self.wait = wait
        self.asked: list[tuple[str, str]] = []
        self.told: list[tuple[str, str, float | None]] = []

    def before(self, registry: str, bucket: str) -> float:
        self.asked.append((registry, bucket))
        return self.wait

    def throttled(self, registry: str, bucket: str, retry_after: float | None) -> None:
        self.told.append((registry, bucket, retry_after))


def test_the_retry_layer_asks_per_bucket_and_not_for_a_redirect_off_the_registry() -> None:
    recording = Recording(wait=0.25)
    slept: list[float] = []
    retry = RetryPolicy(pacer=recording, sleep=slept.append)
    retry.before_request(REG, "GET", httpx.URL(f"https://{REG}/v2/a/referrers/sha256:00"))
    retry.before_request(REG, "GET", httpx.URL("https://blobs.blob.core.windows.net/x?sig=1"))
    retry.before_request("127.0.0.1:5000", "DELETE", httpx.URL("http://127.0.0.1:5000/v2/a/x"))
    retry.throttled(REG, "POST", 7.0, httpx.URL(f"https://{REG}/oauth2/token"))
    retry.throttled(REG, "GET", 7.0, httpx.URL("https://blobs.blob.core.windows.net/x"))
    assert recording.asked == [(REG, "referrers"), ("127.0.0.1:5000", "delete")]
    assert recording.told == [(REG, "token", 7.0)]
    assert slept == [0.25, 0.25]


def test_a_long_budget_wait_defers_the_job() -> None:
    from replicator.domain.errors import DeferRequested

    retry = RetryPolicy(pacer=Recording(wait=90.0), sleep=lambda _s: None, defer_after=60.0)
    with pytest.raises(DeferRequested) as caught:
        retry.before_request(REG, "GET", httpx.URL(f"https://{REG}/v2/a/manifests/x"))
    assert caught.value.delay_seconds == 90.0


def test_leases_and_429s_are_reported_for_the_budget_metrics() -> None:
    clock = FakeClock(1_700_000_000.0)
    leased: list[tuple[str, str, int]] = []
    throttled: list[tuple[str, str]] = []
    p = BudgetPacer(
        lambda _r: Limits(read=600),
        InProcessLeases(clock),
        clock=clock,
        on_lease=lambda r, b, n: leased.append((r, b, n)),
        on_throttled=lambda r, b: throttled.append((r, b)),
    )
    for _ in range(30):
        p.before(REG, "read")
    assert sum(n for _r, _b, n in leased) >= 30 and {b for _r, b, _n in leased} == {"read"}
    p.throttled(REG, "referrers", 3.0)
    assert throttled == [(REG, "referrers")]


def test_the_fleet_pacer_emits_registry_budget_used_and_registry_throttled() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from replicator.adapters.azure import telemetry
    from replicator.adapters.azure.budget_store import fleet_pacer
    from replicator.domain.config import load_settings

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(provider, None)
    try:
        settings = load_settings({"REPLICATOR_SOURCE": REG, "REPLICATOR_TARGETS": "dr.azurecr.io"})
        p = fleet_pacer(settings)  # no storage configured: in process
        for _ in range(10):
            p.before(REG, "read")
        p.throttled(REG, "read", 1.0)
        data = reader.get_metrics_data()
        points: dict[str, list[tuple[dict[str, object], float]]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = float(getattr(point, "value", 0))
                        points.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value)
                        )
    finally:
        telemetry.use_providers()
        provider.shutdown()
    used = points["registry_budget_used"]
    assert used[0][0] == {"registry": REG, "bucket": "read"} and used[0][1] >= 10
    assert points["registry_throttled"] == [({"registry": REG, "bucket": "read"}, 1.0)]


class _Refusing:
    """An ARM client whose ImportImage answers 429 with Retry-After: 12."""

    def __init__(self) -> None:
        self.registries = self
        self.calls = 0

    def begin_import_image(self, *args: object, **kwargs: object) -> object:
        from azure.core.exceptions import HttpResponseError

        self.calls += 1
        response = httpx.Response(429, headers={"Retry-After": "12"})
        error = HttpResponseError(message="Too many requests")
        error.status_code = 429
        error.response = response  # type: ignore[assignment]
        raise error


def test_import_image_calls_draw_from_the_arm_budget_and_a_429_pauses_it() -> None:
    from types import SimpleNamespace

    from replicator.adapters.acr.arm import RegistryId
    from replicator.adapters.acr.importer import AcrImporter
    from replicator.domain.config import load_settings
    from replicator.domain.errors import TransientRegistryError

    settings = load_settings({"REPLICATOR_SOURCE": REG, "REPLICATOR_TARGETS": "dr.azurecr.io"})
    recording = Recording()
    registries = SimpleNamespace(retry=RetryPolicy(pacer=recording, sleep=lambda _s: None))
    importer = AcrImporter(settings, credential=object(), registries=registries)  # type: ignore[arg-type]
    arm = _Refusing()
    importer.client = lambda _subscription: arm  # type: ignore[method-assign,assignment,return-value]
    rid = RegistryId("sub", "rg", "dr")
    with pytest.raises(TransientRegistryError):
        importer._run(rid, object(), reference="dr.azurecr.io/app:v1")  # type: ignore[arg-type]
    assert arm.calls == 1
    assert recording.asked == [("arm", "write")]
    assert recording.told == [("arm", "write", 12.0)]
