"""The jobs queue: Azure Storage queues through ``azure-storage-queue``.

Messages are base64 text, matching ``host.json`` (``messageEncoding: base64``), which the
Functions host decodes before the ``replicate`` trigger sees them.

Every message is sent with a visibility delay *and* a time-to-live that outlives it. Put
Message (Storage REST reference, "Put Message": ``visibilitytimeout`` at most 7 days and
never later than the expiry; ``messagettl`` defaults to 7 days, and from version 2017-07-29
on ``-1`` means the message never expires) would otherwise let a 7-day delay expire the
message the moment it becomes visible. So the TTL is always ``-1`` and the delay is capped
at 7 days: a job due later carries its due time (``not_before``) and the worker sends it
on again when it arrives early (``service._defer``), as many times as it takes.

The 64 KiB limit applies to the message *as sent* ("the encoded message can be up to
64 KiB"): the base64 text, about 48 KiB of JSON.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.storage.queue import (
    ExponentialRetry,
    QueueClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from replicator.adapters.azure.provision import create_quietly, provisioned
from replicator.domain.config import StorageConnection
from replicator.domain.errors import InvalidJobError, QueueUnavailableError
from replicator.domain.model import MAX_JOB_BYTES, POISON_QUEUE_NAME, QUEUE_NAME, CopyJob, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600  # Put Message: visibilitytimeout at most 7 days
NEVER_EXPIRES = -1  # Put Message: messagettl=-1, the message does not expire (2017-07-29+)
MAX_MESSAGE_BYTES = MAX_JOB_BYTES  # Put Message: the *encoded* message, at most 64 KiB
RequestHook = Callable[[Any], None]  # azure-core's raw_request_hook: sees each PipelineRequest


def encoded_size(text: str) -> int:
    """How many bytes ``text`` takes on the queue once base64-encoded (host.json's encoding)."""
    return len(base64.b64encode(text.encode("utf-8")))


def check_size(text: str) -> None:
    """Refuse a message the queue would refuse: over 64 KiB as sent (after base64)."""
    size = encoded_size(text)
    if size > MAX_MESSAGE_BYTES:
        raise InvalidJobError(
            f"message is {size} bytes as sent (base64), over the queue's {MAX_MESSAGE_BYTES}"
        )


@dataclass(frozen=True)
class StorageRetry:
    """The storage SDKs' own retry: ``total`` retries, the first after ``backoff_seconds``
    (then 1 + 2, 1 + 4 ... as ``ExponentialRetry`` grows it), each +- ``jitter_seconds``.
    A few quick ones by default: the SDK's default waits 15 s and more, and every caller
    here has a retry of its own above it (Event Grid, the queue host). Tests pass one that
    does not sleep (``NO_WAIT_RETRY``)."""

    total: int = 3
    backoff_seconds: int = 1
    jitter_seconds: int = 1

    def queue_policy(self) -> ExponentialRetry:
        return ExponentialRetry(
            initial_backoff=self.backoff_seconds,
            increment_base=2 if self.backoff_seconds else 0,
            retry_total=self.total,
            random_jitter_range=self.jitter_seconds,
        )

    def table_options(self) -> dict[str, Any]:
        """The same budget for azure-data-tables and azure-storage-blob (keyword options)."""
        return {"retry_total": self.total, "retry_backoff_factor": self.backoff_seconds / 2}


DEFAULT_RETRY = StorageRetry()
NO_WAIT_RETRY = StorageRetry(total=1, backoff_seconds=0, jitter_seconds=0)


def storage_retry(retry: StorageRetry = DEFAULT_RETRY) -> ExponentialRetry:
    """The queue client's retry policy for ``retry`` (the default: 1 s, 3 s, 5 s)."""
    return retry.queue_policy()


def storage_credential(connection: StorageConnection) -> TokenCredential:
    """The token credential for an identity-based connection (managed identity in Azure)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if connection.client_id:
        return ManagedIdentityCredential(client_id=connection.client_id)
    return DefaultAzureCredential()


def queue_client(
    connection: StorageConnection,
    name: str,
    *,
    retry: StorageRetry = DEFAULT_RETRY,
    request_hook: RequestHook | None = None,
) -> QueueClient:
    """A queue client whose messages are base64 text, as host.json's messageEncoding says.
    ``request_hook`` sees every request the SDK sends (tests assert what went out)."""
    options: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        "retry_policy": storage_retry(retry),
    }
    if request_hook is not None:
        options["raw_request_hook"] = request_hook
    if connection.connection_string:
        return QueueClient.from_connection_string(connection.connection_string, name, **options)
    return QueueClient(
        str(connection.queue_service_uri),
        name,
        credential=storage_credential(connection),
        **options,
    )


@dataclass
class StorageJobQueue:
    """Implements ``replicator.app.ports.JobQueue`` plus what ``status`` and ``replay`` need.
    Each queue is created on first use when it does not exist
    (``replicator.adapters.azure.provision``)."""

    connection: StorageConnection
    name: str = QUEUE_NAME
    retry: StorageRetry = DEFAULT_RETRY
    request_hook: RequestHook | None = None
    _clients: dict[str, QueueClient] = field(default_factory=dict, repr=False)

    def client(self, name: str | None = None) -> QueueClient:
        name = name or self.name
        if name not in self._clients:
            self._clients[name] = queue_client(
                self.connection, name, retry=self.retry, request_hook=self.request_hook
            )
        return self._clients[name]

    @property
    def poison_name(self) -> str:
        return f"{self.name}-poison" if self.name != QUEUE_NAME else POISON_QUEUE_NAME

    def _call(self, queue: str | None, what: str, call: Callable[[], T]) -> T:
        """One storage call on ``queue``, creating the queue first if it is missing; any
        storage failure becomes a ``QueueUnavailableError`` (never a raw SDK error)."""
        name = queue or self.name
        client = self.client(name)
        try:
            return provisioned(call, client.create_queue, f"queue {name}")
        except AzureError as exc:
            raise QueueUnavailableError(
                f"cannot {what} {name}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc

    def ensure(self) -> None:
        """Create the jobs and poison queues when they do not exist yet."""
        for name in (self.name, self.poison_name):
            client = self.client(name)
            try:
                create_quietly(client.create_queue)
            except AzureError as exc:
                raise QueueUnavailableError(f"cannot create queue {name}: {exc}") from exc

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        """Send ``job`` visible after ``delay_seconds``. A delay past Put Message's 7 days
        goes into the job as its due time, so the worker sends it on when it comes early."""
        if delay_seconds > MAX_VISIBILITY_SECONDS and job.not_before is None:
            job = job.evolve(not_before=utcnow() + timedelta(seconds=delay_seconds))
        self.send_text(job.to_json(), delay_seconds=delay_seconds)

    def send_many(self, jobs: Iterable[CopyJob]) -> int:
        count = 0
        for job in jobs:
            self.send(job)
            count += 1
        return count

    def send_text(self, text: str, *, delay_seconds: int = 0, queue: str | None = None) -> None:
        """Send ``text`` visible after ``delay_seconds`` (capped at Put Message's 7 days: a
        later job carries its due time and is sent on again), never expiring."""
        check_size(text)
        delay = max(0, min(int(delay_seconds), MAX_VISIBILITY_SECONDS))
        client = self.client(queue)
        self._call(
            queue,
            "enqueue on",
            lambda: client.send_message(text, visibility_timeout=delay, time_to_live=NEVER_EXPIRES),
        )

    def send_poison(self, body: str, reason: str) -> None:
        """Park a message that no retry can fix, with its reason, on the poison queue."""
        self.send_text(poison_envelope(body, reason), queue=self.poison_name)

    def depth(self, queue: str | None = None) -> int:
        """The queue's approximate length (a queue created just now holds 0)."""
        client = self.client(queue)
        props = self._call(queue, "read queue", client.get_queue_properties)
        return int(props.approximate_message_count or 0)

    def replay_poison(self, repository: str | None = None, limit: int = 10_000) -> int:
        """Move poison messages back to the jobs queue: those of ``repository``, or all."""
        poison = self.client(self.poison_name)
        return self._call(
            self.poison_name, "replay", lambda: self._replay(poison, repository, limit)
        )

    def _replay(self, poison: QueueClient, repository: str | None, limit: int) -> int:
        moved = 0
        skipped = []
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
        return moved


def poison_envelope(body: str, reason: str) -> str:
    """The poison message: the reason and as much of the original as fits the queue."""
    keep = len(body)
    while True:
        envelope = json.dumps({"poison_reason": reason[:2000], "message": body[:keep]})
        if encoded_size(envelope) <= MAX_MESSAGE_BYTES or keep == 0:
            return envelope
        keep = min(keep // 2, MAX_MESSAGE_BYTES // 2)


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
