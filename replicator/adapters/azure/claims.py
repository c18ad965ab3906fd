"""Push claims: one replication per push of a job, however often it is delivered.

Event Grid delivers at least once, a geo-replicated source raises one event per replica,
and the queue host retries: the same push of the same job id may reach several workers.
Each claims it first with conditional writes on a row of the status table (partition
``_claim``, row key the job id; Azure Table storage, "Insert Entity" refuses an existing
key with 409, "Update Entity" with ``If-Match: <etag>`` refuses a changed row with 412):

- no row yet: *insert* it (only one insert of a key succeeds): ``OWNED``;
- a row for the same push that is done: ``DONE`` (a duplicate, nothing to do);
- a row for the same push claimed less than ``CLAIM_LEASE`` ago: ``BUSY`` (under way);
- a row for another push (a tag moved back to the same content), or a lease run out (its
  worker died): *replace it if unchanged* (etag): ``OWNED``, or ``BUSY`` when another
  worker replaced it first.

``release`` marks the push done, or deletes the row so a retry can claim it again.
:class:`TableClaims` is the ``replicator.app.ports.PushClaims`` the runtime holds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from replicator.adapters.azure.status import TableStatusStore
from replicator.domain.model import CopyJob, utcnow

CLAIM_PARTITION = "_claim"
CLAIM_LEASE = timedelta(minutes=10)  # read at each claim: a test process may shorten it


class Claim(StrEnum):
    OWNED = "owned"  # this worker replicates the push
    DONE = "done"  # a duplicate delivery of a push already replicated
    BUSY = "busy"  # another worker is replicating this very push right now


def _push_key(job: CopyJob) -> str:
    return job.pushed_at.isoformat() if job.pushed_at else ""


def _row(job: CopyJob, *, done: bool) -> dict[str, Any]:
    return {
        "PartitionKey": CLAIM_PARTITION,
        "RowKey": job.job_id,
        "PushedAt": _push_key(job),
        "ClaimedAt": utcnow(),
        "Done": done,
    }


def claim(store: TableStatusStore, job: CopyJob) -> Claim:
    """Claim one push of one job id, so duplicate deliveries (retries, geo-replicas, Event
    Grid's at-least-once) cost one copy. A later push with the same content (a tag moved
    back) has another push time and takes the claim over."""
    entity = _row(job, done=False)
    client = store.client
    try:
        store.call("claim", client.create_entity, entity)
        return Claim.OWNED
    except ResourceExistsError:
        pass
    try:
        current = store.call("claim", client.get_entity, CLAIM_PARTITION, job.job_id)
    except ResourceNotFoundError:  # released between the insert and the read
        return claim(store, job)
    same_push = current.get("PushedAt", "") == entity["PushedAt"]
    if same_push and current.get("Done"):
        return Claim.DONE
    if same_push and utcnow() - current["ClaimedAt"] < CLAIM_LEASE:
        return Claim.BUSY
    try:
        store.replace_unless_modified("claim", entity, current)
    except (ResourceModifiedError, HttpResponseError):
        return Claim.BUSY
    return Claim.OWNED


def release(store: TableStatusStore, job: CopyJob, *, done: bool) -> None:
    """Mark the claimed push done, or give the claim up so a retry can take it."""
    if done:
        row = _row(job, done=True)
        store.call("claim", store.client.upsert_entity, row, mode=UpdateMode.REPLACE)
    else:
        with contextlib.suppress(ResourceNotFoundError):
            store.call("claim", store.client.delete_entity, CLAIM_PARTITION, job.job_id)


@dataclass(frozen=True)
class TableClaims:
    """Implements ``replicator.app.ports.PushClaims`` on the status table."""

    table: TableStatusStore

    def claim(self, job: CopyJob) -> Claim:
        return claim(self.table, job)

    def release(self, job: CopyJob, *, done: bool) -> None:
        release(self.table, job, done=done)
