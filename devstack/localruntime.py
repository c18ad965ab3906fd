"""``build_runtime``'s runtime with its adapters' own types, for the local stack.

``Runtime`` is typed against the app's ports; on the local stack the tests, the demo and
the benchmarks also look inside the adapters it was built with (a queue's client and
name, the status table's rows, a registry client's blob calls). ``local_runtime`` checks
that the adapters are the ones ``build_runtime`` composes and says so in the types.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from replicator.adapters.azure.planblobs import PlanBlobs
from replicator.adapters.azure.queue import StorageJobQueue
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.registries import Registries
from replicator.app.runtime import Runtime


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
