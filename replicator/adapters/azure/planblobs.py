"""Dry-run plans as blobs in the app's storage account (``azure-storage-blob``).

A whole-registry plan can be far over a table entity's 1 MiB, so ``run_plan`` writes it to
``replication-plans/<plan id>.json`` and the plan row links it. The container is created
on first use (``replicator.adapters.azure.provision``), like the queues and the status table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings
from azure.storage.blob import ExponentialRetry as BlobRetry

from replicator.adapters.azure.provision import provisioned
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageRetry, storage_credential
from replicator.domain.config import StorageConnection
from replicator.domain.errors import QueueUnavailableError
from replicator.domain.model import PLANS_CONTAINER

MAX_PLAN_BLOB_BYTES = 256 * 1024 * 1024  # read back at most this much (tests, operators)


def blob_service_uri(connection: StorageConnection) -> str:
    """The account's blob endpoint for an identity-based connection. The settings name the
    queue and table endpoints; Azure's endpoints differ only in the service label
    (``https://<account>.queue.<suffix>`` -> ``https://<account>.blob.<suffix>``)."""
    queue = str(connection.queue_service_uri or "")
    return queue.replace(".queue.", ".blob.", 1)


def blob_service(connection: StorageConnection, retry: StorageRetry) -> BlobServiceClient:
    policy = BlobRetry(
        initial_backoff=retry.backoff_seconds,
        increment_base=2 if retry.backoff_seconds else 0,
        retry_total=retry.total,
        random_jitter_range=retry.jitter_seconds,
    )
    if connection.connection_string:
        return BlobServiceClient.from_connection_string(
            connection.connection_string, retry_policy=policy
        )
    return BlobServiceClient(
        blob_service_uri(connection),
        credential=storage_credential(connection),
        retry_policy=policy,
    )


@dataclass
class PlanBlobs:
    """Writes and reads dry-run plans; every storage failure is a ``QueueUnavailableError``."""

    connection: StorageConnection
    container: str = PLANS_CONTAINER
    retry: StorageRetry = DEFAULT_RETRY
    _service: BlobServiceClient | None = field(default=None, repr=False)

    @property
    def service(self) -> BlobServiceClient:
        if self._service is None:
            self._service = blob_service(self.connection, self.retry)
        return self._service

    def put(self, plan_id: str, text: str) -> str:
        """Store the plan as ``<plan id>.json``; returns the blob's URL."""
        container = self.service.get_container_client(self.container)
        blob = container.get_blob_client(f"{plan_id}.json")
        settings = ContentSettings(content_type="application/json")
        try:
            provisioned(
                lambda: blob.upload_blob(
                    text.encode("utf-8"), overwrite=True, content_settings=settings
                ),
                container.create_container,
                f"blob container {self.container}",
            )
        except AzureError as exc:
            raise QueueUnavailableError(f"cannot write plan {plan_id}: {exc}") from exc
        return str(blob.url)

    def get(self, plan_id: str) -> bytes | None:
        """The stored plan, or None when there is none (read at most 256 MiB)."""
        blob = self.service.get_blob_client(self.container, f"{plan_id}.json")
        try:
            return bytes(blob.download_blob(offset=0, length=MAX_PLAN_BLOB_BYTES).readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise QueueUnavailableError(f"cannot read plan {plan_id}: {exc}") from exc
