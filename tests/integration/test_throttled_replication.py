"""Replicating through ACR-like throttling (``devstack/throttling.py``), scaled down
to a few hundred requests a minute: the replicator paced by its budget stays within its
share of the source (counted at the double), is never refused, and a production client
pulling at a steady rate within the headroom is never answered 429; without the budget,
production is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from devstack.hostile import running
from devstack.localstack import Registry
from devstack.testimages import push_images
from devstack.throttling import Throttle, ThrottlingRegistry
from replicator.adapters.budget_pacer import DEFAULT_GRACE_SECONDS, BudgetPacer
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import USER_AGENT, Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.budgets import DEFAULT_BURST_SECONDS, limits_for
from replicator.domain.config import load_settings
from replicator.domain.reference import ImageRef

SOURCE_LIMITS = {"read": 1200.0, "referrers": 240.0, "write": 400.0}  # a minute, scaled down
OVERSHOOT_SECONDS = DEFAULT_BURST_SECONDS + DEFAULT_GRACE_SECONDS
IMAGES = 6


def _identify(headers: dict[str, str]) -> str:
    return headers.get("user-agent", "").split("/")[0] or "anonymous"


@contextmanager
def throttled_source(upstream: Registry, depth_seconds: float) -> Iterator[ThrottlingRegistry]:
    proxy = ThrottlingRegistry(
        upstream.host, Throttle(SOURCE_LIMITS, depth_seconds=depth_seconds), identify=_identify
    )
    with running(proxy):
        yield proxy


def _seed(proxy: ThrottlingRegistry, count: int = IMAGES) -> dict[ImageRef, str]:
    """Signed two-platform images pushed through the proxy (its referrers API indexes
    them), with the throttle off."""
    proxy.throttle.on = False
    with Registries() as seeding:
        pushed = push_images(seeding, proxy.host, count, repos=3, prefix="burst")
    proxy.throttle.on = True
    return {ref: image.digest for ref, image in pushed.items()}


class Production:
    """Pulls one manifest at a steady rate, as ``identity``, until stopped."""

    def __init__(self, proxy: ThrottlingRegistry, ref: ImageRef, per_minute: float, identity: str):
        self.url = f"http://{proxy.host}/v2/{ref.repository}/manifests/{ref.tag}"
        self.interval = 60.0 / per_minute
        self.identity = identity
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        accept = "application/vnd.oci.image.index.v1+json"
        with httpx.Client(headers={"User-Agent": self.identity, "Accept": accept}) as http:
            due = time.monotonic()
            while not self._stop.is_set():
                self.statuses.append(http.get(self.url).status_code)
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Production:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _replicate(
    proxy: ThrottlingRegistry,
    target: Registry,
    images: dict[ImageRef, str],
    pacer: BudgetPacer | None,
    jobs: int = 3,
) -> dict[ImageRef, str]:
    retry = RetryPolicy(pacer=pacer) if pacer is not None else RetryPolicy()
    with Registries(retry=retry) as registries:
        copier = ImageCopier(registries)

        def copy(ref: ImageRef) -> tuple[ImageRef, str]:
            report = copier.copy_image(ref, ImageRef(target.host, ref.repository, ref.tag))
            return ref, report.digest

        with ThreadPoolExecutor(jobs) as pool:  # jobs at once, as instances run them
            return dict(pool.map(copy, images))


@pytest.mark.parametrize("depth_seconds", [10.0, 60.0])  # ACR does not publish the depth
def test_the_paced_replicator_stays_in_its_share_and_production_is_never_refused(
    registry_pair: tuple[Registry, Registry], depth_seconds: float
) -> None:
    upstream, target = registry_pair
    with throttled_source(upstream, depth_seconds) as proxy:
        images = _seed(proxy)
        settings = load_settings(
            {
                "REPLICATOR_SOURCE": proxy.host,
                "REPLICATOR_TARGETS": target.host,
                "REPLICATOR_RATE_LIMITS": json.dumps({proxy.host: SOURCE_LIMITS}),
            }
        )
        budget = limits_for(settings, proxy.host)  # half of the source's limits
        assert (budget.read, budget.referrers) == (600.0, 120.0)
        pacer = BudgetPacer(lambda registry: limits_for(settings, registry))
        first = next(iter(images))
        with Production(proxy, first, per_minute=240, identity="production") as production:
            copied = _replicate(proxy, target, images, pacer)
    assert copied == images  # digest for digest
    assert production.statuses and set(production.statuses) == {200}
    throttle = proxy.throttle
    assert throttle.refused_of(USER_AGENT) == []
    for window in (5.0, 10.0):
        # counted at the double: the read bucket holds referrers calls and other reads
        reads = throttle.most_in_window(USER_AGENT, "read", window)
        assert reads <= 600 * (window + OVERSHOOT_SECONDS) / 60 + 2
        referrers = throttle.most_in_window(USER_AGENT, "referrers", window)
        assert referrers <= 120 * (window + OVERSHOOT_SECONDS) / 60 + 1
    assert throttle.count(USER_AGENT, "referrers", 0, time.time() + 1) >= IMAGES  # it listed them


def test_without_the_budget_production_pulls_are_refused(
    registry_pair: tuple[Registry, Registry],
) -> None:
    """The failure the budget prevents: a replicator that only backs off on its own 429s
    spends the source's shared bucket (here its identity is not limited separately, as
    when it shares one, e.g. admin credentials) and production is answered 429."""
    upstream, target = registry_pair
    limits = {"read": 300.0, "referrers": 120.0}
    throttle = Throttle(limits, depth_seconds=2.0, identity_limits=limits)
    proxy = ThrottlingRegistry(upstream.host, throttle, identify=_identify)
    with running(proxy):
        images = _seed(proxy, count=4)
        first = next(iter(images))
        with Production(proxy, first, per_minute=120, identity="production") as production:
            copied = _replicate(proxy, target, images, pacer=None, jobs=8)
    assert copied == images  # it gets there, on its retries
    assert 429 in production.statuses
    assert throttle.refused_of(USER_AGENT)  # and it was refused itself


def test_the_double_refuses_a_burst_with_a_counting_down_retry_after(
    registry: Registry,
) -> None:
    clock = [1000.0]
    throttle = Throttle({"read": 60.0}, depth_seconds=10.0, clock=lambda: clock[0])
    # per identity: 30 a minute, 5 deep; per registry 60, 10 deep
    assert [throttle.admit("a", "GET", "/v2/x/manifests/1") for _ in range(5)] == [None] * 5
    assert throttle.admit("a", "GET", "/v2/x/manifests/1") == 2  # a token in 2 s
    clock[0] += 1.0
    assert throttle.admit("a", "GET", "/v2/x/manifests/1") == 1  # counting down
    assert [throttle.admit("b", "GET", "/v2/") for _ in range(6)] == [None] * 5 + [2]
    # a referrers call takes from referrers and read: a read-less identity waits for read
    assert throttle.admit("a", "GET", "/v2/x/referrers/sha256:00") == 1
    proxy = ThrottlingRegistry(registry.host, Throttle({"read": 60.0}, depth_seconds=1.0))
    with running(proxy), httpx.Client() as http:
        statuses = [http.get(f"http://{proxy.host}/v2/").status_code for _ in range(3)]
        refused = http.get(f"http://{proxy.host}/v2/")
    assert statuses[0] == 200 and refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(refused.headers["Retry-After"]) >= 1
