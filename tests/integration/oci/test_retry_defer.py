"""A registry asking for a wait too long to sleep in a worker (``Retry-After`` over the
retry policy's ``defer_after``): the job goes back on the queue with that visibility delay,
nothing sleeps, nothing is copied yet (issue 14, item 4)."""

from __future__ import annotations

from datetime import timedelta

from devstack.faulty_proxy import Fault, FaultyProxy
from devstack.localstack import Azurite, Registry
from devstack.localworker import worker_runtime
from devstack.testimages import push_test_image
from replicator.app import service
from replicator.domain.model import Action, CopyJob, Outcome, utcnow
from replicator.domain.reference import ImageRef


def test_a_long_retry_after_defers_the_job_instead_of_sleeping(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    source, target = registry_pair
    with (
        FaultyProxy(source.host) as proxy,
        worker_runtime(source, target, fresh_azurite, REPLICATOR_SOURCE=proxy.host) as (
            runtime,
            counting,
        ),
    ):
        pushed = push_test_image(
            runtime.registries, ImageRef(source.host, "team/app", "v1"), referrers=False
        )
        later = (utcnow() + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        throttle = proxy.add(
            Fault("HEAD", r"/manifests/", "status", status=429, headers={"Retry-After": later})
        )
        job = CopyJob(
            action=Action.PUSH,
            source=proxy.host,
            target=target.host,
            repository="team/app",
            tag="v1",
            digest=pushed.digest,
        )

        result = service.replicate(runtime, job)

        assert result.outcome is Outcome.DEFERRED
        assert throttle.fired == 1  # asked once, not retried in place
        assert counting.copies == []
        queue = runtime.queue.client()
        assert runtime.queue.depth() == 1  # the job is back on the queue...
        assert list(queue.receive_messages(max_messages=32)) == []  # ...not visible yet
        (row,) = runtime.status.images("team/app", "v1")
        assert row["outcome"] == "deferred"
