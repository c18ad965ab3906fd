"""Issue 17, "Test it the way it fails": three worker processes (each its own
interpreter, as Flex instances are) drain a burst of signed two-platform images from a
source behind ACR-like throttling (``devstack/throttling.py``, scaled down), sharing
one budget through Azurite, while a production client pulls from the source at a steady
rate within the headroom."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx

from devstack.hostile import HostileRegistry, running
from devstack.localstack import Azurite, Registry
from devstack.localworker import deliver_push, worker_runtime
from devstack.testimages import push_images
from devstack.throttling import Throttle, ThrottlingRegistry
from replicator.adapters.budget_pacer import DEFAULT_GRACE_SECONDS
from replicator.adapters.oci.registries import USER_AGENT
from replicator.domain.budgets import DEFAULT_BURST_SECONDS
from tests.e2e.e2e_support import differences, start_worker

IMAGES = 120  # a burst of over a hundred in the suite (issue 17); bench fleet runs 500
LIMITS = {"read": 2400.0, "referrers": 600.0, "write": 600.0}  # the source's, a minute
SHARE = 0.5  # REPLICATOR_SOURCE_SHARE's default
PRODUCTION_PER_MINUTE = 300.0  # within the headroom: 2400 - 1200 reads a minute
OVERSHOOT_SECONDS = DEFAULT_BURST_SECONDS + DEFAULT_GRACE_SECONDS


def _identify(headers: dict[str, str]) -> str:
    return headers.get("user-agent", "").split("/")[0] or "anonymous"


class Production(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.statuses: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"User-Agent": "production", "Accept": "application/vnd.oci.image.index.v1+json"}
        with httpx.Client(headers=headers) as http:
            due = time.monotonic()
            while not self.stop.is_set():
                self.statuses.append(http.get(self.url).status_code)
                due += 60.0 / PRODUCTION_PER_MINUTE
                self.stop.wait(max(0.0, due - time.monotonic()))


def test_three_workers_drain_a_burst_within_the_share_and_production_is_never_refused(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    upstream, target = registry_pair
    source = ThrottlingRegistry(
        upstream.host, Throttle(LIMITS, depth_seconds=10.0), identify=_identify
    )
    dr = HostileRegistry(target.host)  # forwards all, records what the workers sent
    limits = json.dumps({source.host: LIMITS})
    with (
        running(source, dr),
        worker_runtime(source, dr, fresh_azurite, REPLICATOR_RATE_LIMITS=limits) as (runtime, _),
    ):
        source.throttle.on = False  # the pushes and their events are not the replicator's
        images = push_images(runtime.registries, source.host, IMAGES, repos=6, prefix="burst")
        for ref, image in images.items():
            deliver_push(ref, image.digest)
        source.throttle.on = True
        first = next(iter(images))
        production = Production(f"http://{source.host}/v2/{first.repository}/manifests/{first.tag}")
        production.start()
        env = {
            "REPLICATOR_SOURCE": source.host,
            "REPLICATOR_TARGETS": dr.host,
            "REPLICATOR_RATE_LIMITS": limits,
            "AzureWebJobsStorage": fresh_azurite.connection_string,
            "E2E_TIMEOUT": "900",
        }
        workers = [start_worker(env) for _ in range(3)]
        outcomes = [w.communicate(timeout=1000) for w in workers]
        production.stop.set()
        production.join(timeout=10)
        for worker, (_out, err) in zip(workers, outcomes, strict=True):
            assert worker.returncode == 0, err[-2000:]
        stats = [json.loads(out.strip().splitlines()[-1]) for out, _err in outcomes]

        # all replicated digest for digest, none poisoned, none copied twice
        assert sum(s["poisoned"] for s in stats) == 0
        assert differences(runtime.registries, images, target.host) == []
        wanted = {f"/v2/{r.repository}/manifests/{r.tag}" for r in images}
        tag_puts = Counter(s.path for s in dr.seen if s.method == "PUT" and s.path in wanted)
        assert set(tag_puts) == wanted and set(tag_puts.values()) == {1}
        assert sum(1 for s in stats if s["succeeded"]) >= 2  # the work was shared

    # production, steady and within the headroom, is never answered 429
    assert production.statuses and set(production.statuses) == {200}
    # the fleet's requests to the source, counted at the double, within its share
    throttle = source.throttle
    for window in (10.0, 30.0):
        for bucket in ("read", "referrers"):
            share = LIMITS[bucket] * SHARE
            most = throttle.most_in_window(USER_AGENT, bucket, window)
            assert most <= share * (window + OVERSHOOT_SECONDS) / 60 + 2, (bucket, window, most)
    assert throttle.refused_of(USER_AGENT) == []
