"""What a process needs to do the work: settings and the adapters built from them, once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from replicator.config import Settings
from replicator.model import CopyJob, Target
from replicator.oci.copy import ImageCopier
from replicator.oci.registries import Registries
from replicator.ports import CopyReport
from replicator.queue import StorageJobQueue
from replicator.status import TableStatusStore
from replicator.telemetry import span

# (job, target, digest) -> (what the copy did, which path ran: "import" | "copy")
Deliver = Callable[[CopyJob, Target, str], tuple[CopyReport, str]]


@dataclass
class Runtime:
    settings: Settings
    registries: Registries
    queue: StorageJobQueue
    status: TableStatusStore
    copier: ImageCopier
    deliver: Deliver | None = field(default=None)
    busy_recheck_seconds: int = 30  # when a duplicate finds its push under way elsewhere

    def close(self) -> None:
        self.registries.close()


def copy_deliverer(copier: ImageCopier) -> Deliver:
    """The data-plane path: always available, any registry to any registry."""

    def deliver(job: CopyJob, target: Target, digest: str) -> tuple[CopyReport, str]:
        src = job.source_ref.with_digest(digest)
        dst = src.with_registry(target.login_server)
        with span("copy", source=str(src), target=str(dst)):
            return copier.copy_image(src, dst), "copy"

    return deliver


def build_runtime(settings: Settings) -> Runtime:
    """Adapters for ``settings``; the storage connection must be configured."""
    from replicator.errors import ConfigError

    if settings.storage is None:
        raise ConfigError([f"the queue connection {settings.queue_connection!r} is not set"])
    registries = Registries(plain_http=settings.uses_plain_http)
    copier = ImageCopier(registries)
    return Runtime(
        settings=settings,
        registries=registries,
        queue=StorageJobQueue(settings.storage),
        status=TableStatusStore(settings.storage),
        copier=copier,
        deliver=copy_deliverer(copier),
    )
