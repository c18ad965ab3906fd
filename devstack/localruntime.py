"""``build_runtime``'s runtime with its adapters' own types, serving the handlers locally.

``Runtime`` is typed against the app's ports; on the local stack the tests, the demo and
the benchmarks also look inside the adapters it was built with (a queue's client and
name, the status table's rows, a registry client's blob calls). ``local_runtime`` checks
that the adapters are the ones ``build_runtime`` composes and says so in the types.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from replicator.adapters.azure.planblobs import PlanBlobs
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageJobQueue, StorageRetry
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.runtime import Runtime, build_runtime
from replicator.domain.config import Settings
from replicator.functions import triggers


@dataclass
class LocalRuntime(Runtime):
    registries: Registries
    queue: StorageJobQueue
    status: TableStatusStore
    plans: StorageJobQueue
    plan_blobs: PlanBlobs


def local_runtime(runtime: Runtime) -> LocalRuntime:
    """The same settings and adapters as ``runtime``, typed as what they are."""
    if isinstance(runtime, LocalRuntime):
        return runtime
    registries, queue, status = runtime.registries, runtime.queue, runtime.status
    plans, plan_blobs = runtime.plans, runtime.plan_blobs
    if not (
        isinstance(registries, Registries)
        and isinstance(queue, StorageJobQueue)
        and isinstance(status, TableStatusStore)
        and isinstance(plans, StorageJobQueue)
        and isinstance(plan_blobs, PlanBlobs)
    ):
        raise TypeError("not a runtime build_runtime composed (in-memory fakes?)")
    narrowed = {"registries", "queue", "status", "plans", "plan_blobs"}
    rest = {f.name: getattr(runtime, f.name) for f in fields(runtime) if f.name not in narrowed}
    return LocalRuntime(
        registries=registries,
        queue=queue,
        status=status,
        plans=plans,
        plan_blobs=plan_blobs,
        **rest,
    )


@contextmanager
def serving(
    settings: Settings,
    *,
    storage_retry: StorageRetry = DEFAULT_RETRY,
    registry_retry: RetryPolicy | None = None,
    provision: bool = True,
) -> Iterator[LocalRuntime]:
    """``build_runtime(settings)`` serving the Functions handlers (``triggers``) until the
    block ends, then closed; its queues and status table created first unless
    ``provision=False`` (a fresh account, where they are created on first use)."""
    runtime = local_runtime(
        build_runtime(settings, storage_retry=storage_retry, registry_retry=registry_retry)
    )
    if provision:
        runtime.queue.ensure()
        runtime.status.ensure()
    triggers.use_runtime(runtime)
    try:
        yield runtime
    finally:
        triggers.use_runtime(None)
        runtime.close()
