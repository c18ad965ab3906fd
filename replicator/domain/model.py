"""Frozen values that cross the seams: targets, jobs, outcomes. Pure: no I/O, no SDKs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from replicator.domain.errors import InvalidJobError, InvalidReferenceError
from replicator.domain.reference import (
    ImageRef,
    parse_digest,
    parse_registry,
    parse_repository,
    parse_tag,
)

JOB_VERSION = 1
MAX_JOB_BYTES = 64 * 1024  # an Azure Storage queue message is at most 64 KiB
QUEUE_NAME = "replication-jobs"
POISON_QUEUE_NAME = f"{QUEUE_NAME}-poison"
PLANS_QUEUE = "replication-plans"  # CONTRACT.md: whole-registry resync plans
PLANS_CONTAINER = "replication-plans"  # blob container for dry-run plans
STATUS_TABLE = "replicationstatus"
# what made a job: a registry event, a reconcile pass, a resync plan, the CLI, a poison replay
Origin = Literal["event", "reconcile", "resync", "cli", "replay"]
ORIGINS: frozenset[Origin] = frozenset(get_args(Origin))


class Strategy(StrEnum):
    IMPORT = "import"  # ACR ImportImage, server-side
    COPY = "copy"  # OCI data-plane copy through the worker
    AUTO = "auto"  # import where it works, copy otherwise


class Action(StrEnum):
    PUSH = "push"
    DELETE = "delete"


class Outcome(StrEnum):
    """How a job ended. ``FAILED`` and ``RETRYING`` are failures; the rest are successes."""

    COPIED = "copied"
    IMPORTED = "imported"
    ALREADY_PRESENT = "already_present"
    SOURCE_MISSING = "source_missing"
    DELETED = "deleted"
    DELETE_KEPT = "delete_kept"  # delete policy `keep`: logged only
    DELETE_SKIPPED = "delete_skipped"  # the source has that digest again
    DEFERRED = "deferred"  # re-queued to run later (propagate-after)
    FAILED = "failed"  # permanent failure, recorded with its reason
    RETRYING = "retrying"  # a transient failure: the queue will deliver the job again

    @property
    def succeeded(self) -> bool:
        return self not in {Outcome.FAILED, Outcome.RETRYING}


@dataclass(frozen=True)
class Target:
    login_server: str
    resource_id: str | None = None
    strategy: Strategy = Strategy.AUTO

    def __post_init__(self) -> None:
        parse_registry(self.login_server)

    @property
    def is_acr(self) -> bool:
        return is_acr_host(self.login_server)


def is_acr_host(login_server: str) -> bool:
    """ACR login servers in every cloud (public, China, US Gov)."""
    host = login_server.split(":", 1)[0].lower()
    return host.endswith((".azurecr.io", ".azurecr.cn", ".azurecr.us"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def job_id_for(
    target: str,
    repository: str,
    digest: str,
    tag: str | None,
    action: Action,
    *,
    repair: bool = False,
) -> str:
    """Same push, same target: same id. Duplicated events therefore collapse to one job.
    A repair job has an id of its own (its row is not the plain push's)."""
    parts = [target, repository, digest, tag or "", action.value, *(["repair"] if repair else [])]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def parse_time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidJobError(f"{name} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidJobError(f"{name} is not an ISO 8601 time: {value[:40]!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CopyJob:
    """One unit of work: bring ``repository@digest`` (and ``tag``) from source to target."""

    action: Action
    source: str
    target: str
    repository: str
    digest: str
    tag: str | None = None
    media_type: str | None = None
    event_id: str | None = None
    pushed_at: datetime | None = None
    not_before: datetime | None = None
    origin: Origin = "event"
    traceparent: str | None = None  # W3C trace context of the event that made the job
    # copy even when DR holds the digest, checking every blob and child manifest (HEAD) and
    # pushing what is missing: what the verify sweep sends for a blob DR lost
    repair: bool = False
    version: int = JOB_VERSION
    job_id: str = field(default="")

    def __post_init__(self) -> None:
        parse_origin(self.origin)  # a job the queue would refuse is refused here
        if not self.job_id:
            key = (self.target, self.repository, self.digest, self.tag, self.action)
            object.__setattr__(self, "job_id", job_id_for(*key, repair=self.repair))

    @property
    def source_ref(self) -> ImageRef:
        return ImageRef(self.source, self.repository, self.tag, self.digest)

    @property
    def target_ref(self) -> ImageRef:
        return ImageRef(self.target, self.repository, self.tag, self.digest)

    def evolve(self, **changes: Any) -> CopyJob:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "job_id": self.job_id,
            "action": self.action.value,
            "source": self.source,
            "target": self.target,
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "media_type": self.media_type,
            "event_id": self.event_id,
            "pushed_at": _iso(self.pushed_at),
            "not_before": _iso(self.not_before),
            "origin": self.origin,
            "traceparent": self.traceparent,
            # only when set: every other job's message is what it was before the flag
            **({"repair": True} if self.repair else {}),
        }

    def to_json(self) -> str:
        text = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > MAX_JOB_BYTES:
            raise InvalidJobError(f"job is {len(text)} bytes, over the queue's 64 KiB")
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> CopyJob:
        """Decode and validate a queue message; any problem is an ``InvalidJobError``."""
        if isinstance(text, bytes | bytearray):
            if len(text) > MAX_JOB_BYTES:
                raise InvalidJobError("message over 64 KiB")
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidJobError("message is not UTF-8") from exc
        if len(text) > MAX_JOB_BYTES:
            raise InvalidJobError("message over 64 KiB")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidJobError(f"message is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidJobError("message is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CopyJob:
        version = data.get("version")
        if version != JOB_VERSION or isinstance(version, bool):
            raise InvalidJobError(f"unsupported job version {version!r} (expected {JOB_VERSION})")
        try:
            action = Action(str(data.get("action")))
        except ValueError as exc:
            raise InvalidJobError(f"unknown action {data.get('action')!r}") from exc
        optional = {
            k: data.get(k) for k in ("tag", "media_type", "event_id", "job_id", "traceparent")
        }
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise InvalidJobError(f"{key} must be a string")
        origin = parse_origin(data.get("origin", "event"))
        repair = data.get("repair", False)  # absent in every message older than the flag
        if not isinstance(repair, bool):
            raise InvalidJobError("repair must be true or false")
        try:
            job = cls(
                action=action,
                source=parse_registry(_required(data, "source")),
                target=parse_registry(_required(data, "target")),
                repository=parse_repository(_required(data, "repository")),
                digest=parse_digest(_required(data, "digest")),
                tag=parse_tag(optional["tag"]) if optional["tag"] is not None else None,
                media_type=optional["media_type"],
                event_id=optional["event_id"],
                pushed_at=parse_time(data.get("pushed_at"), "pushed_at"),
                not_before=parse_time(data.get("not_before"), "not_before"),
                origin=origin,
                traceparent=_traceparent(optional["traceparent"]),
                repair=repair,
            )
        except InvalidReferenceError as exc:
            raise InvalidJobError(str(exc)) from exc
        if optional["job_id"] and optional["job_id"] != job.job_id:
            raise InvalidJobError("job_id does not match the job's content")
        return job


def parse_origin(value: object) -> Origin:
    """One of :data:`ORIGINS`, else an ``InvalidJobError``."""
    if not isinstance(value, str) or value not in ORIGINS:
        raise InvalidJobError(f"unknown origin {value!r}")
    return value


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparent(value: str | None) -> str | None:
    """A malformed trace context is dropped, not fatal: the job still runs, in a new trace."""
    return value if value is not None and _TRACEPARENT.match(value) else None


def _required(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidJobError(f"missing or non-string field {key!r}")
    return value


@dataclass(frozen=True)
class JobResult:
    """What happened to one job on one target; written to the status table."""

    job: CopyJob
    outcome: Outcome
    strategy: str = "none"  # import | copy | none: which path actually ran
    digest: str | None = None  # the digest the target ended at (may be newer than the job's)
    attempts: int = 1
    error: str | None = None
    bytes_copied: int = 0
    finished_at: datetime = field(default_factory=utcnow)

    @property
    def lag_seconds(self) -> float | None:
        if self.job.pushed_at is None:
            return None
        return max(0.0, (self.finished_at - self.job.pushed_at).total_seconds())


@dataclass(frozen=True)
class Descriptor:
    """What a manifest HEAD tells: the digest, media type and size behind a reference."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class CopyReport:
    """What a copy did. ``digest`` is the top-level manifest digest now in the target."""

    digest: str
    manifests_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    referrers_copied: int = 0
    already_present: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TagEntry:
    """One tag of a listing: the tag and the digest it points at (None when unknown)."""

    repository: str
    tag: str
    digest: str | None
