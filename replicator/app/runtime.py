"""What a process needs to do the work: settings and the ports it reaches the world through.

``Runtime`` is typed against ``replicator.app.ports`` only; ``build_runtime`` is the
composition root, the one place that builds the concrete adapters from the settings.
Tests build a ``Runtime`` of in-memory fakes (``tests/fakes.py``) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from replicator.adapters.acr.importer import AcrImporters
from replicator.adapters.azure.budget_store import TableLeases, fleet_pacer
from replicator.adapters.azure.claims import TableClaims
from replicator.adapters.azure.credentials import registry_credentials
from replicator.adapters.azure.cursors import TableCursors
from replicator.adapters.azure.planblobs import PlanBlobs
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageJobQueue, StorageRetry
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.delivery import deliverer
from replicator.app.ports import (
    BudgetBook,
    CursorStore,
    Deliver,
    JobQueue,
    PlanBlobStore,
    PlanQueue,
    PushClaims,
    ReferrerLister,
    RegistryClients,
    StatusStore,
)
from replicator.domain.config import Settings
from replicator.domain.errors import ConfigError
from replicator.domain.model import PLANS_QUEUE
from replicator.domain.strategy import choose_strategy


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    registries: RegistryClients
    queue: JobQueue
    status: StatusStore
    claims: PushClaims  # one replication per push, however often it is delivered
    plans: PlanQueue  # replication-plans: whole-registry resync plans
    plan_blobs: PlanBlobStore  # dry-run plans, too big for a table entity
    cursors: CursorStore  # where the rolling sweeps (referrer drift, verify) stopped
    referrers: ReferrerLister  # the referrers of manifests, through the registry clients
    deliver: Deliver | None = None
    busy_recheck_seconds: int = 30  # when a duplicate finds its push under way elsewhere
    closing: tuple[Closeable, ...] = field(default=())  # closed before the registries
    budgets: BudgetBook | None = None  # the fleet's request budgets, for status

    def close(self) -> None:
        for resource in self.closing:
            resource.close()
        self.registries.close()


def build_runtime(
    settings: Settings,
    *,
    storage_retry: StorageRetry = DEFAULT_RETRY,
    registry_retry: RetryPolicy | None = None,
) -> Runtime:
    """Adapters for ``settings``; the storage connection must be configured.
    ``storage_retry`` / ``registry_retry``: the storage SDKs' and the registry client's
    retries (None: the client's default); tests pass ones that barely sleep."""
    if settings.storage is None:
        raise ConfigError([f"the queue connection {settings.queue_connection!r} is not set"])
    registries = Registries(
        plain_http=settings.uses_plain_http,
        credentials=registry_credentials(settings),
        retry=registry_retry or RetryPolicy(pacer=fleet_pacer(settings, retry=storage_retry)),
    )
    copier = ImageCopier(registries)
    importer = None
    if any(choose_strategy(settings, target).imports for target in settings.targets):
        importer = AcrImporters(settings, copier=copier, registries=registries)
    status = TableStatusStore(settings.storage, retry=storage_retry)
    return Runtime(
        settings=settings,
        registries=registries,
        queue=StorageJobQueue(settings.storage, retry=storage_retry),
        status=status,
        claims=TableClaims(status),
        plans=StorageJobQueue(settings.storage, name=PLANS_QUEUE, retry=storage_retry),
        plan_blobs=PlanBlobs(settings.storage, retry=storage_retry),
        cursors=TableCursors(status),
        referrers=RegistryReferrers(registries),
        deliver=deliverer(
            settings,
            importer=importer,
            copier=copier,
            reach=None if importer is None else importer.reach,
        ),
        closing=() if importer is None else (importer,),
        budgets=TableLeases(settings.storage, retry=storage_retry),
    )
