"""The narrow interfaces the service reaches the outside world through.

Adapters (``replicator.oci``, ``replicator.acr``, ``replicator.adapters.azure.queue``,
``replicator.adapters.azure.status``) implement them; tests may pass any object of the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Protocol

from replicator.domain.model import CopyJob, CopyReport, Descriptor, JobResult, TagEntry, Target
from replicator.domain.reference import ImageRef


class ManifestReader(Protocol):
    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        """The descriptor behind a tag or digest, or None when it does not exist."""
        ...


class ManifestDeleter(Protocol):
    def delete_manifest(self, ref: ImageRef) -> None:
        """Delete a manifest by digest (a tag reference resolves first)."""
        ...


class Copier(Protocol):
    def copy_image(self, src: ImageRef, dst: ImageRef) -> CopyReport:
        """Copy ``src`` (tag or digest) to ``dst``: whole index, blobs, referrers, tag last."""
        ...


class Importer(Protocol):
    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        """Server-side import of ``job.repository@digest`` into ``target`` (tagged per job)."""
        ...


class Lister(Protocol):
    def list_repositories(self) -> Iterator[str]: ...

    def list_tags(self, repository: str) -> Iterator[TagEntry]: ...


class JobQueue(Protocol):
    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None: ...

    def send_many(self, jobs: Iterable[CopyJob]) -> int: ...


class StatusStore(Protocol):
    def record(self, result: JobResult) -> None: ...

    def last_result(self, job: CopyJob) -> JobResult | None: ...

    def images(self, repository: str, tag: str | None) -> list[dict[str, object]]: ...

    def since(self, when: datetime) -> list[dict[str, object]]: ...
