"""The worker's decisions: replicate one job, through the runtime's ports only.

Safety rules, in order: only the configured source and targets are ever touched; the tag
is resolved in the source *now*, so an old job never sets a DR tag back to an older
image; nothing is deleted in the DR registry unless the delete policy says so, and then
only when the source still lacks the digest when the job runs (a referrer deleted so, in
a DR without the referrers API, leaves its subject's ``sha256-<hex>`` index first). A DR
tag the source lost while it still holds the digest under another tag is *untagged*
(``replicator.adapters.acr.tags``), never deleted by digest (that would remove the
source-held tag as well); a registry that refuses tag deletes leaves the tag, the refusal
is remembered per target and reconcile reports the tag instead of queueing it again.

A target the worker imports into (strategy ``import``, or ``auto`` that chose import) need
not be reachable over its data plane: the check for "already present" is then one read
that, unanswered, lets the import go ahead (ImportImage with ``Force`` is idempotent, and
the digest is still the one the source holds now), and the job's row says the target was
not read. See docs/operations.md, "Import targets the worker cannot reach".

A repair job (``CopyJob.repair``, the verify sweep's for a blob DR lost) is never taken for
done because DR holds its digest: it is copied, over the data plane, by the copy engine's
repair (``replicator.adapters.oci.copy``), which checks every blob and child under it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from replicator.adapters.acr.reach import read_manifest
from replicator.adapters.acr.tags import delete_tag
from replicator.adapters.azure.claims import Claim
from replicator.adapters.azure.telemetry import (
    continue_trace,
    log_fields,
    record_job,
    result_fields,
)
from replicator.app.delivery import import_reach
from replicator.app.ports import DeliveryPath
from replicator.app.runtime import Runtime
from replicator.domain.errors import DeferRequested, PermanentRegistryError, TransientRegistryError
from replicator.domain.model import Action, CopyJob, CopyReport, JobResult, Outcome, Target, utcnow
from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)
DUE_TOLERANCE = timedelta(seconds=5)
SETTLE_ROUNDS = 3  # reads of the source tag after an import, before the job is retried


def replicate(runtime: Runtime, job: CopyJob, *, attempt: int = 1) -> JobResult:
    """Run one job; record and return its result. Raises only what a retry can fix."""
    attributes = log_fields(job, attempt=attempt)
    with continue_trace(job.traceparent, "replicate", **attributes) as current:
        started = time.monotonic()
        result = _replicate(runtime, job, attempt)
        current.set_attribute("outcome", result.outcome.value)
        if result.outcome is not Outcome.DEFERRED:
            record_job(result, duration_seconds=time.monotonic() - started)
        return result


def _replicate(runtime: Runtime, job: CopyJob, attempt: int) -> JobResult:
    settings = runtime.settings
    target = settings.target(job.target)
    if job.source != settings.source or target is None:
        reason = f"job names {job.source} -> {job.target}, outside the configured registries"
        return _finish(runtime, JobResult(job, Outcome.FAILED, attempts=attempt, error=reason))
    if job.not_before is not None and job.not_before > utcnow() + DUE_TOLERANCE:
        return _finish(runtime, _defer(runtime, job, job.not_before, attempt))
    claimed = job.action is Action.PUSH and job.origin == "event" and job.pushed_at is not None
    if claimed:
        state = runtime.claims.claim(job)
        if state is not Claim.OWNED:
            return _duplicate(runtime, job, state, attempt)
    try:
        if job.action is Action.DELETE:
            result = _delete(runtime, job, attempt)
        else:
            result = _push(runtime, job, target, attempt)
    except DeferRequested as exc:  # a registry asked for a wait too long to sleep here
        if claimed:
            runtime.claims.release(job, done=False)
        due = utcnow() + timedelta(seconds=exc.delay_seconds)
        return _finish(runtime, _defer(runtime, job, due, attempt))
    except TransientRegistryError as exc:
        if claimed:
            runtime.claims.release(job, done=False)
        retrying = JobResult(job, Outcome.RETRYING, attempts=attempt, error=str(exc))
        record_job(_finish(runtime, retrying))
        raise
    except PermanentRegistryError as exc:
        result = JobResult(job, Outcome.FAILED, attempts=attempt, error=str(exc))
    if claimed:
        runtime.claims.release(job, done=result.outcome.succeeded)
    return _finish(runtime, result)


def _duplicate(runtime: Runtime, job: CopyJob, state: Claim, attempt: int) -> JobResult:
    """A second delivery of a push: done already, or under way elsewhere (check back later).
    Not written to the status table: the first delivery's row tells the truth."""
    if state is Claim.BUSY:
        runtime.queue.send(job, delay_seconds=runtime.busy_recheck_seconds)
        result = JobResult(job, Outcome.DEFERRED, attempts=attempt, error="duplicate in progress")
    else:
        result = JobResult(job, Outcome.ALREADY_PRESENT, attempts=attempt, error="duplicate")
    return _finish(runtime, result, record=False)


def _finish(runtime: Runtime, result: JobResult, *, record: bool = True) -> JobResult:
    if record:
        runtime.status.record(result)
    job = result.job
    level = logging.WARNING if not result.outcome.succeeded else logging.INFO
    log.log(
        level,
        "job %s %s %s:%s -> %s: %s%s",
        job.job_id,
        job.action.value,
        job.repository,
        job.tag or job.digest,
        job.target,
        result.outcome.value,
        f" ({result.error})" if result.error else "",
        extra=result_fields(result),
    )
    return result


def _push(runtime: Runtime, job: CopyJob, target: Target, attempt: int) -> JobResult:
    source = runtime.registries.client(job.source)
    current = source.head_manifest(job.source_ref.with_digest(None) if job.tag else job.source_ref)
    if current is None:
        what = f"tag {job.tag}" if job.tag else job.digest
        return JobResult(job, Outcome.SOURCE_MISSING, attempts=attempt, error=f"{what} is gone")
    digest = current.digest
    if digest != job.digest:
        log.info("%s:%s moved to %s since the job was made", job.repository, job.tag, digest)
    dst_ref = job.target_ref.with_digest(None) if job.tag else job.target_ref
    present, unread = _in_target(runtime, target, dst_ref)
    if present == digest and not _relist(job) and not job.repair:
        return JobResult(job, Outcome.ALREADY_PRESENT, digest=digest, attempts=attempt)
    if runtime.deliver is None:
        raise PermanentRegistryError("no delivery path configured")
    report, path = runtime.deliver(job, target, digest)
    if path == DeliveryPath.IMPORT and job.tag:
        report, path = _settle(runtime, job, target, digest, report)
    outcome = Outcome.IMPORTED if path == DeliveryPath.IMPORT else Outcome.COPIED
    return JobResult(
        job,
        outcome,
        strategy=path,
        digest=report.digest,
        attempts=attempt,
        bytes_copied=report.bytes_copied,
        error=_notes(report.extra, unread),  # why a copy ran instead, what was not read
    )


def _relist(job: CopyJob) -> bool:
    """Whether a digest DR holds still goes to the copier: reconcile's jobs by digest alone
    are manifests DR does not list (a referrer its subject's referrers tag lacks, say),
    which the copier lists where they are present (``replicator.adapters.oci.copy``)."""
    return job.origin == "reconcile" and job.tag is None


def _settle(
    runtime: Runtime, job: CopyJob, target: Target, digest: str, report: CopyReport
) -> tuple[CopyReport, DeliveryPath]:
    """After an import, read the source tag again; if it moved, import what it names now.

    An import by digest with ``Force`` sets the DR tag to what this job read from the
    source. Had the tag moved meanwhile, and another job imported the newer digest before
    this import landed, this import would set the DR tag back. Reading the source after
    the import landed closes that: whichever job's import lands last reads the source
    afterwards. No read of the target is needed. At most ``SETTLE_ROUNDS`` reads of the
    source; a tag still moving after them is retried."""
    assert runtime.deliver is not None
    source = runtime.registries.client(job.source)
    path = DeliveryPath.IMPORT
    for round_ in range(1, SETTLE_ROUNDS + 1):
        now = source.head_manifest(job.source_ref.with_digest(None))
        if now is None or now.digest == digest:  # gone: its delete event handles the tag
            return report, path
        if round_ == SETTLE_ROUNDS:
            break
        log.info(
            "%s:%s moved to %s while %s was imported: importing it",
            job.repository,
            job.tag,
            now.digest,
            digest,
        )
        digest = now.digest
        report, path = runtime.deliver(job, target, digest)
        if path != DeliveryPath.IMPORT:
            return report, path
    raise TransientRegistryError(
        f"{job.repository}:{job.tag} kept moving during its imports ({SETTLE_ROUNDS} reads)",
        operation="import",
        reference=str(job.source_ref),
    )


def _in_target(runtime: Runtime, target: Target, ref: ImageRef) -> tuple[str | None, str | None]:
    """The digest ``target`` holds under ``ref`` (None: nothing), and, for an import
    target whose data plane did not answer, why it was not read (the import goes ahead)."""
    client = runtime.registries.client(target.login_server)
    reach = import_reach(runtime.deliver, target)
    if reach is None:  # a copy may run: it needs the data plane, and so does this check
        found = client.head_manifest(ref)
        return (found.digest if found is not None else None), None
    seen = read_manifest(client, ref, reach)
    if seen.known:
        return seen.digest, None
    log.warning("%s not read before the import (it goes ahead): %s", ref, seen.why)
    return None, f"{target.login_server} not read before the import: {seen.why}"[:500]


def _notes(extra: dict[str, str], unread: str | None) -> str | None:
    keys = ("repaired", "fallback_reason", "referrers_fallback_reason", "unconfirmed")
    notes = [extra[key] for key in keys if key in extra]
    if unread is not None and "unconfirmed" in extra:
        notes.insert(0, unread)
    return "; ".join(notes) or None


def _defer(runtime: Runtime, job: CopyJob, due: datetime, attempt: int) -> JobResult:
    delay = max(1, int((due - utcnow()).total_seconds()))
    runtime.queue.send(job, delay_seconds=delay)
    return JobResult(job, Outcome.DEFERRED, attempts=attempt, error=f"due at {due.isoformat()}")


def _delete(runtime: Runtime, job: CopyJob, attempt: int) -> JobResult:
    policy = runtime.settings.delete_policy
    if not policy.deletes:
        return JobResult(
            job, Outcome.DELETE_KEPT, attempts=attempt, error="REPLICATOR_DELETE_POLICY=keep"
        )
    if policy.mode == "propagate-after" and job.not_before is None:
        due = utcnow() + timedelta(seconds=policy.delay_seconds)
        return _defer(runtime, job.evolve(not_before=due), due, attempt)
    source = runtime.registries.client(job.source)
    if job.tag is not None and source.head_manifest(job.source_ref.with_digest(None)):
        return JobResult(
            job, Outcome.DELETE_SKIPPED, attempts=attempt, error="the source has the tag again"
        )
    ref = job.source_ref.with_tag(None)
    if source.head_manifest(ref) is not None:
        if job.tag is not None:
            return _untag(runtime, job, attempt)
        return JobResult(
            job, Outcome.DELETE_SKIPPED, attempts=attempt, error="the source has it again"
        )
    dst = runtime.registries.client(job.target)
    dst_ref = ref.with_registry(job.target)
    if dst.head_manifest(dst_ref) is not None:
        runtime.referrers.unlist(job.target, job.repository, job.digest)  # off its subject's tag
        dst.delete_manifest(dst_ref)
    return JobResult(job, Outcome.DELETED, digest=job.digest, attempts=attempt)


def _untag(runtime: Runtime, job: CopyJob, attempt: int) -> JobResult:
    """The source lost the tag but holds the digest under another one: remove the DR tag
    only. A registry that refuses tag deletes keeps it; the refusal is remembered."""
    assert job.tag is not None
    untag = DeliveryPath.UNTAG
    client = runtime.registries.client(job.target)
    done = delete_tag(client, job.target, job.repository, job.tag)
    if done.refused:
        runtime.status.record_untag_refused(job.target, done.refused)
        reason = f"{done.refused}; the tag stays (the source holds {job.digest} under another tag)"
        return JobResult(
            job, Outcome.DELETE_SKIPPED, strategy=untag, attempts=attempt, error=reason
        )
    return JobResult(job, Outcome.DELETED, strategy=untag, digest=job.digest, attempts=attempt)
