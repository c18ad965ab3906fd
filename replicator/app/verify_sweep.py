"""The reconcile timer's verify sweep (``REPLICATOR_VERIFY_SWEEP``): ``verify``, a slice a pass.

Per planned target, each pass: the images in step by tags (from the listings reconcile
just made: nothing is listed twice), the next ``REPLICATOR_VERIFY_SWEEP`` of them from the
target's cursor (``verify|<target>`` in the status table, ``replicator.adapters.azure.
cursors``; past the end it wraps round and counts a lap), each walked in DR as ``verify``
walks it (``replicator.app.image_audit.Auditor``): manifests by digest, config and layers
by HEAD, through the runtime's registry clients (the ``RegistryClient`` port), so on any
runtime. Referrer parity is not repeated here: reconcile's referrer drift
(``replicator.app.referrer_sweep``) checks it every pass on the referrers budget, the
tightest. Requests are paced by the runtime's registry pacer; a wait too long for the
timer (``DeferRequested``) ends the pass there, and the cursor keeps the place.

What it finds: a manifest DR lacks (a child of an index, or a listed referrer) becomes a
push job for its digest, which the worker copies or imports with what it names. A blob
missing under a manifest DR holds becomes a repair job for that manifest (``CopyJob.
repair``): the worker copies it although DR holds it, and the copy checks every blob and
child under it (``replicator.adapters.oci.copy``, repair) and pushes what is missing.
Every finding counts as ``missing`` in the target's drift (``ReconcileReport.drift``:
``drift_tags`` and ``status``); the pass's counts go into the cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from replicator.adapters.azure.cursors import Cursor
from replicator.app.image_audit import Auditor, audit_in_order
from replicator.app.ports import CursorStore
from replicator.domain.errors import DeferRequested
from replicator.domain.filters import Filters
from replicator.domain.integrity import Finding, Findings, Image, check_tags, sweep_slice
from replicator.domain.model import Action, CopyJob, utcnow

if TYPE_CHECKING:
    from replicator.app.reconcile import ReconcileReport
    from replicator.app.runtime import Runtime

log = logging.getLogger(__name__)
CURSOR_PREFIX = "verify|"
CONCURRENCY = 4  # images walked at once (the pacer keeps the rate)


@dataclass(frozen=True)
class TargetVerify:
    """What one pass of the sweep found on one target."""

    target: str
    images: int  # in step by tags: the whole sweep
    checked: int  # audited this pass
    findings: Findings = field(default_factory=Findings)
    cursor: Cursor | None = None
    stopped: str | None = None  # why the pass ended early

    @property
    def missing(self) -> int:
        return len(self.findings.missing)

    def counts(self) -> dict[str, int]:
        return {
            "images": self.images,
            "checked": self.checked,
            "missing": self.missing,
            "unreadable": len(self.findings.unreadable),
        }


@dataclass(frozen=True)
class VerifyPass:
    targets: tuple[TargetVerify, ...] = ()
    jobs: tuple[CopyJob, ...] = field(default=(), repr=False)


def repair_jobs(findings: Sequence[Finding], *, source: str, target: str) -> list[CopyJob]:
    """A push job by digest (no tag) per manifest DR lacks, and a repair job
    (``CopyJob.repair``) per manifest DR holds that names a blob DR lacks (the finding's
    ``parent``), each once; nothing for what was unreadable."""
    wanted: dict[tuple[str, str, bool], None] = {}
    for f in findings:
        if f.kind in {"manifest", "referrer"} and f.digest is not None:
            wanted[(f.repository, f.digest, False)] = None
        elif f.kind == "blob" and (f.parent or f.image):
            wanted[(f.repository, str(f.parent or f.image), True)] = None
    return [
        CopyJob(Action.PUSH, source, target, repo, digest, origin="reconcile", repair=repair)
        for repo, digest, repair in wanted
    ]


def position_of(text: str) -> tuple[str, str] | None:
    """A cursor's position (``repository@digest``) as an image key; ``""``: the start."""
    repository, at, digest = text.rpartition("@")
    return (repository, digest) if at and repository else None


def sweep_verify(
    runtime: Runtime,
    report: ReconcileReport,
    *,
    cursors: CursorStore | None = None,
    now: datetime | None = None,
) -> VerifyPass:
    """One pass of the sweep over every planned target (nothing when it is ``off``): the
    repair jobs (not sent), the cursors moved on."""
    settings = runtime.settings
    count = settings.verify_sweep
    if count is None:
        return VerifyPass()
    cursors = cursors or runtime.cursors
    filters = Filters(settings.include, settings.exclude)
    found: list[TargetVerify] = []
    jobs: list[CopyJob] = []
    for drift in report.targets:
        if drift.plan is None:
            continue
        auditor = Auditor(runtime.registries, settings.source, drift.target)
        images = check_tags(report.source_entries, drift.entries, filters).images
        cursor = cursors.get(CURSOR_PREFIX + drift.target)
        done = _target_pass(auditor, images, cursor, count, now or utcnow())
        assert done.cursor is not None
        cursors.put(done.cursor)
        found.append(done)
        jobs += repair_jobs(done.findings.missing, source=settings.source, target=drift.target)
        _log(done)
    return VerifyPass(tuple(found), tuple(jobs))


def _target_pass(
    auditor: Auditor, images: Sequence[Image], cursor: Cursor, count: int, now: datetime
) -> TargetVerify:
    """Audit the next ``count`` images after the cursor; the cursor moved past them."""
    after = position_of(cursor.position)
    chosen, _ = sweep_slice(images, after, count)
    walked, findings, stopped = _walk(auditor, chosen)
    done = chosen[:walked]
    position = done[-1].key if done else after
    lap = bool(done) and images[-1] in done  # passed the end: the next pass starts over
    result = TargetVerify(auditor.target.host, len(images), walked, findings, stopped=stopped)
    text = f"{position[0]}@{position[1]}" if position else ""
    moved = Cursor(cursor.name, text, cursor.laps + int(lap), now, result.counts())
    return replace(result, cursor=moved)


def _walk(auditor: Auditor, chosen: Sequence[Image]) -> tuple[int, Findings, str | None]:
    """Walk ``chosen`` in order (a few at once): how many were done before a deferral
    stopped it, what they found, and the deferral."""
    findings, walked = Findings(), 0
    try:
        with closing(audit_in_order(auditor, chosen, CONCURRENCY, name="verify-sweep")) as walk:
            for _, result in walk:
                findings = findings.plus(result.findings())
                walked += 1
    except DeferRequested as exc:
        return walked, findings, str(exc)
    return walked, findings, None


def _log(done: TargetVerify) -> None:
    blobs = [f for f in done.findings.missing if f.kind == "blob"]
    if blobs:
        log.warning(
            "verify sweep %s: %d blobs missing under manifests DR holds (repair jobs sent; "
            "first: %s@%s)",
            done.target,
            len(blobs),
            blobs[0].repository,
            blobs[0].digest,
        )
    log.info("verify sweep %s: %s%s", done.target, done.counts(), _stopped(done))


def _stopped(done: TargetVerify) -> str:
    return f"; stopped: {done.stopped}" if done.stopped else ""
