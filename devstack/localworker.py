"""The worker on the local stack, as the tests, the benchmarks and the fault runs drive it.

A runtime on real registries and Azurite whose retries are short (``worker_runtime``), the
Event Grid events ACR raises delivered to the handlers (``deliver_push``, ``delete_event``)
and the local queue runner draining ``replication-jobs`` or ``replication-plans``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import azure.functions as func

from devstack.demo import INDEX_MEDIA_TYPE as INDEX
from devstack.demo import LOCAL_TOPIC, push_event
from devstack.localrun import QueueOptions, QueueRunner, RunStats, runner_for
from devstack.localruntime import LocalRuntime, local_runtime, serving
from devstack.localstack import Azurite, Registry
from devstack.testimages import seed
from replicator.adapters.azure.queue import NO_WAIT_RETRY
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.ports import DeliveryPath
from replicator.app.runtime import build_runtime
from replicator.domain.config import StorageConnection, load_settings
from replicator.domain.model import CopyJob, CopyReport, Target, utcnow
from replicator.domain.reference import ImageRef
from replicator.functions import triggers

# The registry client's retry as configured, with short pauses: a refused connection is
# retried as often as in Azure but does not hold a test for a minute per attempt.
QUICK_REGISTRY_RETRY = RetryPolicy(base=0.01, cap=0.1)
FAST = QueueOptions(
    batch_size=16, visibility_timeout=0, max_dequeue_count=3, max_polling_interval=0.1
)


class Hosted(Protocol):
    """A registry by its login server: a ``Registry`` of the local stack, or a double or
    proxy in front of one."""

    @property
    def host(self) -> str: ...


@dataclass
class Counting:
    """Wraps the runtime's delivery path: ``copies`` are the copies it starts, ``done``
    those that completed (a copy cut short by a fault and retried is started twice)."""

    runtime: LocalRuntime
    copies: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        inner = self.runtime.deliver
        assert inner is not None

        def deliver(job: CopyJob, target: Target, digest: str) -> tuple[CopyReport, DeliveryPath]:
            with self.lock:
                self.copies.append(f"{job.repository}@{digest}->{target.login_server}")
            answer = inner(job, target, digest)
            with self.lock:
                self.done.append(f"{job.repository}@{digest}")
            return answer

        self.runtime.deliver = deliver


def worker_runtime(
    source: Hosted, target: Hosted, azurite: Azurite, **env: str
) -> AbstractContextManager[tuple[LocalRuntime, Counting]]:
    """A runtime on ``azurite`` whose storage retries do not sleep, its queues and table
    created; ``env``: more settings (``REPLICATOR_DELETE_POLICY="propagate"``)."""
    return _worker_runtime(source, target, azurite, env, provision=True)


def unprovisioned_runtime(
    source: Hosted, target: Hosted, azurite: Azurite, **env: str
) -> AbstractContextManager[tuple[LocalRuntime, Counting]]:
    """``worker_runtime`` that leaves the queues and table to be created on first use,
    as in a fresh account."""
    return _worker_runtime(source, target, azurite, env, provision=False)


@contextmanager
def _worker_runtime(
    source: Hosted, target: Hosted, azurite: Azurite, env: Mapping[str, str], *, provision: bool
) -> Iterator[tuple[LocalRuntime, Counting]]:
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": source.host,
            "REPLICATOR_TARGETS": target.host,
            "AzureWebJobsStorage": azurite.connection_string,
            "REPLICATOR_UNTAGGED_DELAY": "1s",
            **env,
        },
        require_storage=True,
    )
    with serving(
        settings,
        storage_retry=NO_WAIT_RETRY,
        registry_retry=QUICK_REGISTRY_RETRY,
        provision=provision,
    ) as runtime:
        runtime.busy_recheck_seconds = 1
        yield runtime, Counting(runtime)


@dataclass(frozen=True)
class LocalPair:
    """Where a worker test starts: a source and a target registry of the local stack,
    fresh and empty, a fresh Azurite, and anonymous clients to seed and read them."""

    source: Registry
    target: Registry
    azurite: Azurite
    registries: Registries

    def seed(
        self,
        source: Iterable[tuple[str, str, int]] = (),
        target: Iterable[tuple[str, str, int]] = (),
    ) -> None:
        """``(repository, tag, variant)`` tiny images in each (``devstack.testimages``)."""
        seed(self.registries, self.source.host, source)
        seed(self.registries, self.target.host, target)

    def worker(self, **env: str) -> AbstractContextManager[tuple[LocalRuntime, Counting]]:
        """``devstack.localworker.worker_runtime`` from the source to the target; ``env``:
        more settings."""
        return worker_runtime(self.source, self.target, self.azurite, **env)


def runner(runtime: LocalRuntime, options: QueueOptions = FAST) -> QueueRunner:
    storage = runtime.settings.storage
    assert isinstance(storage, StorageConnection)
    return runner_for(storage, runtime.queue.name, triggers.replicate, options, retry=NO_WAIT_RETRY)


def plan_runner(runtime: LocalRuntime, options: QueueOptions = FAST) -> QueueRunner:
    """Drives ``run_plan`` on ``replication-plans``, as the Functions host would."""
    storage = runtime.settings.storage
    assert isinstance(storage, StorageConnection)
    return runner_for(storage, runtime.plans.name, triggers.run_plan, options, retry=NO_WAIT_RETRY)


def deliver_push(
    ref: ImageRef,
    digest: str,
    size: int = 100,
    *,
    media_type: str = INDEX,
    topic: str = LOCAL_TOPIC,
) -> None:
    """ACR's ImagePushed event for ``ref`` at ``digest``, delivered to the handler now;
    ``topic``: the system topic's (a registry's resource id in Azure)."""
    triggers.on_registry_event(push_event(ref, digest, media_type, size, utcnow(), topic=topic))


def drain(runtime: LocalRuntime, timeout: float = 60) -> RunStats:
    return runner(runtime).run_until_idle(timeout=timeout)


def work_as_an_instance(env: Mapping[str, str], options: QueueOptions, timeout: float) -> RunStats:
    """What one worker process does, as a Flex instance would: a runtime from ``env``'s
    settings, the queue runner over ``replicate`` until the queue is drained (the e2e
    worker processes and bench's fleet run this)."""
    runtime = local_runtime(build_runtime(load_settings(env, require_storage=True)))
    runtime.busy_recheck_seconds = 1
    triggers.use_runtime(runtime)
    storage = runtime.settings.storage
    assert isinstance(storage, StorageConnection)
    try:
        jobs = runner_for(storage, runtime.queue.name, triggers.replicate, options)
        return jobs.run_until_idle(timeout=timeout)
    finally:
        runtime.close()


def delete_event(ref: ImageRef, digest: str) -> func.EventGridEvent:
    """ACR's ImageDeleted event: a digest, no tag (reference section 1)."""
    return func.EventGridEvent(
        id=f"delete-{digest[-8:]}",
        data={
            "action": "delete",
            "timestamp": utcnow().isoformat(),
            "target": {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest,
                "repository": ref.repository,
            },
            "request": {"host": ref.registry, "method": "DELETE"},
        },
        topic="",
        subject=ref.repository,
        event_type="Microsoft.ContainerRegistry.ImageDeleted",
        event_time=utcnow(),
        data_version="2.0",
    )
