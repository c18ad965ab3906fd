"""The jobs queue: Azure Storage queues through ``azure-storage-queue``.

Messages are base64 text, matching ``host.json`` (``messageEncoding: base64``), which the
Functions host decodes before the ``replicate`` trigger sees them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import (
    ExponentialRetry,
    QueueClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from replicator.config import StorageConnection
from replicator.errors import QueueUnavailableError
from replicator.model import MAX_JOB_BYTES, POISON_QUEUE_NAME, QUEUE_NAME, CopyJob

log = logging.getLogger(__name__)
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600  # the service's limit for a message's initial delay


def storage_credential(connection: StorageConnection) -> TokenCredential:
    """The token credential for an identity-based connection (managed identity in Azure)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if connection.client_id:
        return ManagedIdentityCredential(client_id=connection.client_id)
    return DefaultAzureCredential()


def queue_client(connection: StorageConnection, name: str) -> QueueClient:
    """A queue client whose messages are base64 text, as host.json's messageEncoding says."""
    encode, decode = TextBase64EncodePolicy(), TextBase64DecodePolicy()
    if connection.connection_string:
        return QueueClient.from_connection_string(
            connection.connection_string,
            name,
            message_encode_policy=encode,
            message_decode_policy=decode,
            retry_policy=storage_retry(),
        )
    return QueueClient(
        str(connection.queue_service_uri),
        name,
        credential=storage_credential(connection),
        message_encode_policy=encode,
        message_decode_policy=decode,
        retry_policy=storage_retry(),
    )


def storage_retry() -> ExponentialRetry:
    """A few quick retries (1 s, 3 s, 5 s): the SDK's default waits 15 s and more, and every
    caller here has a retry of its own above it (Event Grid, the queue host)."""
    return ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
    )


@dataclass
class StorageJobQueue:
    """Implements ``replicator.ports.JobQueue`` plus what ``status`` and ``replay`` need."""

    connection: StorageConnection
    name: str = QUEUE_NAME
    _clients: dict[str, QueueClient] | None = None

    def client(self, name: str | None = None) -> QueueClient:
        name = name or self.name
        if self._clients is None:
            self._clients = {}
        if name not in self._clients:
            self._clients[name] = queue_client(self.connection, name)
        return self._clients[name]

    @property
    def poison_name(self) -> str:
        return f"{self.name}-poison" if self.name != QUEUE_NAME else POISON_QUEUE_NAME

    def ensure(self) -> None:
        """Create the jobs and poison queues when they do not exist yet."""
        for name in (self.name, self.poison_name):
            try:
                self.client(name).create_queue()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise QueueUnavailableError(f"cannot create queue {name}: {exc}") from exc

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        self.send_text(job.to_json(), delay_seconds=delay_seconds)

    def send_many(self, jobs: Iterable[CopyJob]) -> int:
        count = 0
        for job in jobs:
            self.send(job)
            count += 1
        return count

    def send_text(self, text: str, *, delay_seconds: int = 0, queue: str | None = None) -> None:
        delay = max(0, min(int(delay_seconds), MAX_VISIBILITY_SECONDS))
        try:
            self.client(queue).send_message(text, visibility_timeout=delay or None)
        except AzureError as exc:
            raise QueueUnavailableError(
                f"cannot enqueue on {queue or self.name}: {type(exc).__name__}: {exc}"
            ) from exc

    def send_poison(self, body: str, reason: str) -> None:
        """Park a message that no retry can fix, with its reason, on the poison queue."""
        envelope = json.dumps(
            {"poison_reason": reason[:2000], "message": body[: MAX_JOB_BYTES // 2]}
        )
        self.send_text(envelope, queue=self.poison_name)

    def depth(self, queue: str | None = None) -> int:
        try:
            props = self.client(queue).get_queue_properties()
        except AzureError as exc:
            raise QueueUnavailableError(f"cannot read queue {queue or self.name}: {exc}") from exc
        return int(props.approximate_message_count or 0)

    def replay_poison(self, repository: str | None = None, limit: int = 10_000) -> int:
        """Move poison messages back to the jobs queue: those of ``repository``, or all."""
        moved = 0
        skipped = []
        poison = self.client(self.poison_name)
        try:
            while moved < limit:
                batch = list(poison.receive_messages(max_messages=32, visibility_timeout=120))
                if not batch:
                    break
                for message in batch:
                    body = unwrap_poison(str(message.content))
                    if repository is None or _repository_of(body) == repository:
                        self.send_text(body)
                        poison.delete_message(message)
                        moved += 1
                    else:
                        skipped.append(message)
            for message in skipped:  # make the ones left alone visible again
                poison.update_message(message, visibility_timeout=0)
        except AzureError as exc:
            raise QueueUnavailableError(f"cannot replay {self.poison_name}: {exc}") from exc
        return moved


def unwrap_poison(body: str) -> str:
    """A poison envelope written by ``send_poison`` holds the original message; else as is."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and "poison_reason" in data and isinstance(data.get("message"), str):
        return str(data["message"])
    return body


def _repository_of(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    repository = data.get("repository") if isinstance(data, dict) else None
    return repository if isinstance(repository, str) else None
