"""The status table: each image's state per target, like ECR's per-image replication status.

One row per (repository, tag or digest, target), upserted by every job; Azure Table
storage through ``azure-data-tables`` (Azurite locally). Keys may not hold ``/``, so the
repository's slashes become ``:`` in the partition key. The table is created on first use
when it does not exist (``replicator.adapters.azure.provision``); a missing *row* stays a
``ResourceNotFoundError`` inside this module (and ``claims``, which keeps its rows in the
same table), and every other storage failure leaves it as a ``QueueUnavailableError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from replicator.adapters.azure.provision import create_quietly, missing_container, provisioned
from replicator.adapters.azure.queue import DEFAULT_RETRY, StorageRetry, storage_credential
from replicator.domain.config import StorageConnection
from replicator.domain.errors import QueueUnavailableError
from replicator.domain.model import STATUS_TABLE, CopyJob, JobResult, Outcome, utcnow

RECONCILE_PARTITION = "_reconcile"
MAX_ERROR_CHARS = 4000


def partition_key(repository: str) -> str:
    return "img:" + repository.replace("/", ":")


def row_key(tag: str | None, digest: str, target: str) -> str:
    return f"{tag or '@' + digest}|{target}"


def table_client(
    connection: StorageConnection, name: str = STATUS_TABLE, retry: StorageRetry = DEFAULT_RETRY
) -> TableClient:
    if connection.connection_string:
        return TableClient.from_connection_string(
            connection.connection_string, name, **retry.table_options()
        )
    service = TableServiceClient(
        str(connection.table_service_uri),
        credential=storage_credential(connection),
        **retry.table_options(),
    )
    return service.get_table_client(name)


def _entity(result: JobResult) -> dict[str, Any]:
    job = result.job
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(job.repository),
        "RowKey": row_key(job.tag, job.digest, job.target),
        "Repository": job.repository,
        "Tag": job.tag or "",
        "Digest": result.digest or job.digest,
        "JobDigest": job.digest,
        "Target": job.target,
        "Action": job.action.value,
        "Outcome": result.outcome.value,
        "Strategy": result.strategy,
        "Attempts": result.attempts,
        "JobId": job.job_id,
        "Origin": job.origin,
        "BytesCopied": result.bytes_copied,
        "ReplicatedAt": result.finished_at,
        "LastError": (result.error or "")[:MAX_ERROR_CHARS],
    }
    if job.pushed_at is not None:
        entity["PushedAt"] = job.pushed_at
    if result.lag_seconds is not None:
        entity["LagSeconds"] = float(result.lag_seconds)
    return entity


def _plain(entity: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in dict(entity).items():
        if key in {"PartitionKey", "RowKey"}:
            continue
        out[key[0].lower() + key[1:]] = value.isoformat() if isinstance(value, datetime) else value
    return out


@dataclass
class TableStatusStore:
    """Implements ``replicator.app.ports.StatusStore`` on Azure Table storage."""

    connection: StorageConnection
    name: str = STATUS_TABLE
    retry: StorageRetry = DEFAULT_RETRY
    _client: TableClient | None = None

    @property
    def client(self) -> TableClient:
        if self._client is None:
            self._client = table_client(self.connection, self.name, self.retry)
        return self._client

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One table call, creating the table first when it is missing. A missing row
        (``ResourceNotFoundError``) and the conditional-write conflicts go back to the
        caller (this module, ``replicator.adapters.azure.claims``); every other storage
        failure becomes a ``QueueUnavailableError``."""
        try:
            return provisioned(
                lambda: fn(*args, **kwargs), self.client.create_table, f"table {self.name}"
            )
        except ResourceNotFoundError as exc:
            if missing_container(exc):  # still missing after creating it
                raise QueueUnavailableError(f"status table {what} failed: {exc}") from exc
            raise
        except (ResourceExistsError, ResourceModifiedError):
            raise
        except AzureError as exc:
            raise QueueUnavailableError(f"status table {what} failed: {exc}") from exc

    def replace_unless_modified(self, what: str, entity: dict[str, Any], found: Any) -> None:
        """Write ``entity`` over ``found`` (a row read before) only if nobody wrote it since
        (its ETag); the conflict (``ResourceModifiedError``) goes back to the caller."""
        self.call(
            what,
            self.client.update_entity,
            entity,
            mode=UpdateMode.REPLACE,
            etag=found.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )

    def ensure(self) -> None:
        try:
            create_quietly(self.client.create_table)
        except AzureError as exc:
            raise QueueUnavailableError(f"status table create failed: {exc}") from exc

    def record(self, result: JobResult) -> None:
        self.call("write", self.client.upsert_entity, _entity(result), mode=UpdateMode.REPLACE)

    def last_result(self, job: CopyJob) -> JobResult | None:
        """The recorded result of this very job (same job id), if it already ran."""
        try:
            entity = self.call(
                "read",
                self.client.get_entity,
                partition_key(job.repository),
                row_key(job.tag, job.digest, job.target),
            )
        except ResourceNotFoundError:
            return None
        if entity.get("JobId") != job.job_id:
            return None
        return JobResult(
            job=job,
            outcome=Outcome(entity["Outcome"]),
            strategy=str(entity.get("Strategy", "none")),
            digest=entity.get("Digest"),
            attempts=int(entity.get("Attempts", 1)),
            error=entity.get("LastError") or None,
        )

    def images(self, repository: str, tag: str | None = None) -> list[dict[str, object]]:
        query = "PartitionKey eq @pk"
        params: dict[str, Any] = {"pk": partition_key(repository)}
        if tag:
            query += " and Tag eq @tag"
            params["tag"] = tag
        rows = self.call(
            "query", lambda: list(self.client.query_entities(query, parameters=params))
        )
        return sorted((_plain(e) for e in rows), key=lambda r: str(r.get("target")))

    def since(self, when: datetime) -> list[dict[str, object]]:
        params = {"when": when.astimezone(UTC)}
        query = "ReplicatedAt ge @when"
        rows = self.call(
            "query", lambda: list(self.client.query_entities(query, parameters=params))
        )
        return [_plain(e) for e in rows]

    def record_reconcile(self, drift: dict[str, dict[str, int]], enqueued: int) -> None:
        entity = {
            "PartitionKey": RECONCILE_PARTITION,
            "RowKey": "last",
            "RanAt": utcnow(),
            "Drift": json.dumps(drift, sort_keys=True),
            "Enqueued": enqueued,
        }
        self.call("write", self.client.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def last_reconcile(self) -> dict[str, object] | None:
        try:
            entity = self.call("read", self.client.get_entity, RECONCILE_PARTITION, "last")
        except ResourceNotFoundError:
            return None
        return {
            "ranAt": entity["RanAt"].isoformat(),
            "drift": json.loads(entity.get("Drift") or "{}"),
            "enqueued": int(entity.get("Enqueued", 0)),
        }

    def record_untag_refused(self, target: str, reason: str) -> None:
        """Remember that ``target`` refuses tag deletes (reconcile stops queueing them)."""
        entity = {
            "PartitionKey": UNTAG_PARTITION,
            "RowKey": target,
            "Reason": reason[:MAX_ERROR_CHARS],
            "RefusedAt": utcnow(),
        }
        self.call("write", self.client.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def untag_refused(self, target: str, *, now: datetime | None = None) -> str | None:
        """Why ``target`` refused a tag delete, if it did within ``UNTAG_VERDICT_TTL`` (after
        that one more untag is tried: the registry may have been upgraded)."""
        try:
            entity = self.call("read", self.client.get_entity, UNTAG_PARTITION, target)
        except ResourceNotFoundError:
            return None
        if (now or utcnow()) - entity["RefusedAt"] > UNTAG_VERDICT_TTL:
            return None
        return str(entity.get("Reason") or "refuses tag deletes")

    def record_plan(
        self, plan_id: str, request: str, state: str, *, started: datetime | None = None
    ) -> None:
        """Create (or restart) a resync plan's row: its request and state."""
        entity: dict[str, Any] = {
            "PartitionKey": PLAN_PARTITION,
            "RowKey": plan_id,
            "Request": request,
            "State": state,
            "UpdatedAt": utcnow(),
        }
        if started is not None:
            entity["StartedAt"] = started
        self.call("write", self.client.upsert_entity, entity, mode=UpdateMode.MERGE)

    def update_plan(self, plan_id: str, **fields: object) -> None:
        """Merge ``fields`` (snake_case; dicts and lists stored as JSON) into the plan row."""
        entity: dict[str, Any] = {"PartitionKey": PLAN_PARTITION, "RowKey": plan_id}
        for key, value in fields.items():
            name = "".join(part.capitalize() for part in key.split("_"))
            entity[name] = json.dumps(value) if isinstance(value, dict | list) else value
        entity["UpdatedAt"] = utcnow()
        self.call("write", self.client.upsert_entity, entity, mode=UpdateMode.MERGE)

    def plan(self, plan_id: str) -> dict[str, Any] | None:
        """The plan row as ``status`` shows it, or None for an unknown plan."""
        try:
            entity = self.call("read", self.client.get_entity, PLAN_PARTITION, plan_id)
        except ResourceNotFoundError:
            return None
        row: dict[str, Any] = {"plan": plan_id}
        for key, value in _plain(entity).items():
            if key in PLAN_JSON_FIELDS and isinstance(value, str):
                row[key] = json.loads(value)
            else:
                row[key] = value
        return row


PLAN_PARTITION = "_plan"
PLAN_JSON_FIELDS = frozenset({"request", "drift", "errors"})
UNTAG_PARTITION = "_untag"
UNTAG_VERDICT_TTL = timedelta(days=1)
