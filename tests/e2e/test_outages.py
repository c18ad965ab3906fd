"""End to end across outages: Azurite restarted mid-run, the DR registry down for a while."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest

from devstack.localruntime import LocalRuntime
from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import FAST, deliver_push, runner, worker_runtime
from devstack.testimages import PushedImage, push_images
from replicator.app.reconcile import run_reconcile
from replicator.domain.errors import QueueUnavailableError
from replicator.domain.model import CopyJob
from replicator.domain.reference import ImageRef
from replicator.functions import triggers
from tests.e2e.e2e_support import PATIENT, differences, same_content


@pytest.fixture
def restartable_azurite(stack: LocalStack) -> Iterator[list[Azurite]]:
    """A list holding the running Azurite (the test swaps in the restarted one)."""
    running = [stack.start_azurite()]
    yield running
    running[-1].stop()


def test_azurite_restart_loses_nothing(
    stack: LocalStack,
    registry_pair: tuple[Registry, Registry],
    restartable_azurite: list[Azurite],
) -> None:
    """Jobs queued before the restart survive it; an event arriving while the queue is
    down raises (Event Grid retries it) and its retry after the restart is enqueued."""
    source, target = registry_pair
    azurite = restartable_azurite[0]
    with worker_runtime(source, target, azurite) as (runtime, _):
        images = push_images(runtime.registries, source.host, 4, repos=2)
        (first, a), (second, b), (third, c), (fourth, d) = images.items()
        deliver_push(first, a.digest)
        deliver_push(second, b.digest)
        azurite.stop()
        with pytest.raises(QueueUnavailableError):
            deliver_push(third, c.digest)  # the host answers Event Grid with an error
        restartable_azurite.append(stack.start_azurite(restart=azurite))
        deliver_push(third, c.digest)  # Event Grid's retry
        deliver_push(fourth, d.digest)
        stats = runner(runtime, PATIENT).run_until_idle(timeout=120)
        assert stats.poisoned == 0 and stats.succeeded == 4
        assert differences(runtime.registries, images, target.host) == []
        same_content(runtime.registries, source.host, target.host, {r.repository for r in images})


def _replay(body: bytes) -> dict[str, object]:
    request = func.HttpRequest(method="POST", url="http://localhost/api/replay", body=body)
    response = triggers.replay(request)
    assert response.status_code == 200
    return dict(json.loads(response.get_body()))


def test_target_down_poisons_then_replay_and_reconcile_finish(
    stack: LocalStack, registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite
) -> None:
    """While the DR registry is down, jobs retry then land in poison with their reason
    recorded; after it is back, ``replay`` (the HTTP function) finishes them and
    reconcile finds the image whose event was lost."""
    source, target = registry_pair
    with worker_runtime(source, target, fresh_azurite) as (runtime, _):
        images = push_images(runtime.registries, source.host, 4, repos=2)
        (before, a), (during1, b), (during2, c), (lost, _d) = images.items()
        deliver_push(before, a.digest)
        runner(runtime, FAST).run_until_idle(timeout=60)

        target.stop()
        deliver_push(during1, b.digest)
        deliver_push(during2, c.digest)
        stats = runner(runtime, FAST).run_until_idle(timeout=180)
        assert stats.poisoned == 2 and stats.failed_attempts == 2 * FAST.max_dequeue_count
        poison = runtime.queue.client(runtime.queue.poison_name).peek_messages(max_messages=32)
        assert sorted(CopyJob.from_json(m.content).digest for m in poison) == sorted(
            [b.digest, c.digest]
        )
        for ref in (during1, during2):
            (row,) = runtime.status.images(ref.repository, ref.tag)
            assert row["outcome"] == "retrying" and row["attempts"] == FAST.max_dequeue_count
            assert target.host in str(row["lastError"])

        data = target.service.workdir / "data"
        back = stack.start_registry(  # back on the same port, with the data it held
            port=target.port, config={"storage": {"filesystem": {"rootdirectory": str(data)}}}
        )
        try:
            _recover(runtime, images, target.host, lost)
        finally:
            back.stop()


def _recover(
    runtime: LocalRuntime, images: dict[ImageRef, PushedImage], target_host: str, lost: ImageRef
) -> None:
    assert _replay(b"{}") == {"replayed": 2, "repository": None}
    stats = runner(runtime, FAST).run_until_idle(timeout=60)
    assert stats.poisoned == 0 and stats.succeeded == 2
    assert (
        differences(runtime.registries, {r: i for r, i in images.items() if r != lost}, target_host)
        == []
    )

    report = run_reconcile(runtime)  # the push whose event never came
    plan = report.targets[0].plan
    assert plan is not None
    missing = {(e.repository, e.tag) for e in plan.missing}
    assert (lost.repository, lost.tag) in missing
    runner(runtime, FAST).run_until_idle(timeout=60)
    assert differences(runtime.registries, images, target_host) == []
    assert run_reconcile(runtime).drift()[target_host] == {"missing": 0, "stale": 0, "extra": 0}
