"""What a process needs to do the work: settings and the adapters built from them, once."""

from __future__ import annotations

from dataclasses import dataclass, field

from replicator.adapters.acr.importer import AcrImporters
from replicator.adapters.azure.credentials import registry_credentials
from replicator.adapters.azure.planblobs import PlanBlobs
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageJobQueue, StorageRetry
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.app.delivery import Deliver, deliverer
from replicator.domain.config import Settings
from replicator.domain.model import PLANS_QUEUE
from replicator.domain.strategy import choose_strategy


@dataclass
class Runtime:
    settings: Settings
    registries: Registries
    queue: StorageJobQueue
    status: TableStatusStore
    copier: ImageCopier
    plans: StorageJobQueue  # replication-plans: whole-registry resync plans
    plan_blobs: PlanBlobs  # dry-run plans, too big for a table entity
    deliver: Deliver | None = field(default=None)
    busy_recheck_seconds: int = 30  # when a duplicate finds its push under way elsewhere
    importer: AcrImporters | None = None

    def close(self) -> None:
        if self.importer is not None:
            self.importer.close()
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
    from replicator.domain.errors import ConfigError

    if settings.storage is None:
        raise ConfigError([f"the queue connection {settings.queue_connection!r} is not set"])
    registries = Registries(
        plain_http=settings.uses_plain_http,
        credentials=registry_credentials(settings),
        retry=registry_retry,
    )
    copier = ImageCopier(registries)
    importer = None
    if any(choose_strategy(settings, target).imports for target in settings.targets):
        importer = AcrImporters(settings, copier=copier, registries=registries)
    return Runtime(
        settings=settings,
        registries=registries,
        queue=StorageJobQueue(settings.storage, retry=storage_retry),
        status=TableStatusStore(settings.storage, retry=storage_retry),
        copier=copier,
        plans=StorageJobQueue(settings.storage, name=PLANS_QUEUE, retry=storage_retry),
        plan_blobs=PlanBlobs(settings.storage, retry=storage_retry),
        deliver=deliverer(settings, importer=importer, copier=copier),
        importer=importer,
    )
