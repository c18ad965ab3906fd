"""A local stand-in for the Functions host's queue trigger, for the demo and the tests.

It honours ``host.json`` ``extensions.queues``: ``batchSize`` messages at a time run
concurrently; a failed message becomes visible again after ``visibilityTimeout``; its
``dequeue_count`` grows with every delivery; past ``maxDequeueCount`` it moves to
``<queue>-poison``. Messages are base64 (``messageEncoding``). The real host is not used
here because Core Tools cannot be installed on these machines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StoredMessage

from replicator.adapters.azure.provision import provisioned
from replicator.adapters.azure.queue import DEFAULT_RETRY, NEVER_EXPIRES, StorageRetry, queue_client
from replicator.domain.config import StorageConnection
from replicator.domain.errors import StackError

log = logging.getLogger(__name__)
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
RUN_LEASE_SECONDS = 600  # how long a running message stays invisible to other receivers


def _seconds(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path = HOST_JSON) -> QueueOptions:
        try:
            queues = json.loads(path.read_text())["extensions"]["queues"]
        except (OSError, ValueError, KeyError) as exc:
            raise StackError(f"cannot read extensions.queues from {path}: {exc}") from exc
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            visibility_timeout=_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            max_polling_interval=_seconds(queues.get("maxPollingInterval", "00:01:00")),
            message_encoding=queues.get("messageEncoding", "base64"),
        )


def queue_message(
    message_id: str,
    body: bytes,
    dequeue_count: int = 1,
    *,
    insertion_time: datetime | None = None,
    expiration_time: datetime | None = None,
    pop_receipt: str | None = None,
) -> QueueMessage:
    """The binding the Functions host hands a queue trigger, for one stored message."""
    # azure-functions 1.x does not annotate QueueMessage.__init__
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=message_id,
        body=body,
        dequeue_count=dequeue_count,
        insertion_time=insertion_time,
        expiration_time=expiration_time,
        pop_receipt=pop_receipt,
    )


@dataclass
class RunStats:
    succeeded: int = 0
    failed_attempts: int = 0
    poisoned: int = 0


class QueueRunner:
    """Drive a queue-triggered handler against a real (Azurite) queue."""

    def __init__(
        self,
        queue: QueueClient,
        poison: QueueClient,
        handler: Callable[[func.QueueMessage], None],
        options: QueueOptions | None = None,
    ) -> None:
        self.queue, self.poison, self.handler = queue, poison, handler
        self.options = options or QueueOptions.from_host_json()
        self.stats = RunStats()

    def _run_one(self, message: StoredMessage) -> None:
        content = str(message.content)
        dequeue_count = message.dequeue_count or 1
        binding = queue_message(
            message.id,
            content.encode("utf-8"),
            dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            pop_receipt=message.pop_receipt,
        )
        try:
            self.handler(binding)
        except Exception as exc:
            self._failed(message, content, dequeue_count, exc)
            return
        self.queue.delete_message(message)
        self.stats.succeeded += 1

    def _failed(
        self, message: StoredMessage, content: str, dequeue_count: int, exc: Exception
    ) -> None:
        self.stats.failed_attempts += 1
        if dequeue_count >= self.options.max_dequeue_count:
            log.warning(
                "message %s poisoned after %d attempts: %s",
                message.id,
                dequeue_count,
                exc,
            )
            provisioned(  # the host creates <queue>-poison with its first message
                lambda: self.poison.send_message(content, time_to_live=NEVER_EXPIRES),
                self.poison.create_queue,
                f"queue {self.poison.queue_name}",
            )
            self.queue.delete_message(message)
            self.stats.poisoned += 1
        else:
            log.info(
                "message %s failed (attempt %d): %s",
                message.id,
                dequeue_count,
                exc,
            )
            self.queue.update_message(
                message,
                visibility_timeout=int(self.options.visibility_timeout),
            )

    def run_once(self) -> int:
        """Receive one batch and run it; the number of messages run."""
        batch = provisioned(
            lambda: list(
                self.queue.receive_messages(
                    max_messages=self.options.batch_size, visibility_timeout=RUN_LEASE_SECONDS
                )
            ),
            self.queue.create_queue,
            f"queue {self.queue.queue_name}",
        )
        if not batch:
            return 0
        with ThreadPoolExecutor(max_workers=self.options.batch_size) as pool:
            list(pool.map(self._run_one, batch))
        return len(batch)

    def run_until_idle(self, *, timeout: float = 120.0, poll: float = 0.2) -> RunStats:
        """Run batches until the queue holds no message at all (delayed ones included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_once():
                continue
            if self.queue.get_queue_properties().approximate_message_count == 0:
                return self.stats
            time.sleep(min(poll, self.options.max_polling_interval))
        raise StackError(f"queue {self.queue.queue_name} not drained within {timeout:.0f}s")


def runner_for(
    storage: StorageConnection,
    queue: str,
    handler: Callable[[func.QueueMessage], None],
    options: QueueOptions | None = None,
    *,
    retry: StorageRetry = DEFAULT_RETRY,
) -> QueueRunner:
    """A runner for one queue-triggered function: ``replication-jobs`` -> ``replicate``,
    ``replication-plans`` -> ``run_plan``; failures past the limit go to ``<queue>-poison``."""
    return QueueRunner(
        queue_client(storage, queue, retry=retry),
        queue_client(storage, f"{queue}-poison", retry=retry),
        handler,
        options,
    )
