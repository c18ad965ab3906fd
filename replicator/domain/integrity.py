"""What ``verify`` proves about a DR copy: findings, counts, the verdict, the cursor. Pure.

An audit compares every in-scope source tag with the DR tag (``check_tags``), then walks
each image whose tag is in step (children, config and layers, referrers). What it finds
is *missing* (DR lacks it, or holds bytes that do not hash to its digest), *stale* (a DR
tag at another digest) or *unreadable* (a side did not answer: nothing can be told). The
verdict: something missing or stale is proven (exit 1) even if parts were unreadable;
otherwise anything unreadable leaves the answer unknown (exit 2); else all is proven.

The referrers tag schema's ``<alg>-<hex>`` tags are not images in their own right: they
are left out of the tag check and counted by referrer parity instead.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from replicator.domain.filters import Filters
from replicator.domain.model import TagEntry
from replicator.domain.planning import is_referrers_tag

CURSOR_VERSION = 1
FINDING_KINDS = ("tag", "manifest", "blob", "referrer", "repository")


class Verdict(StrEnum):
    PROVEN = "proven"  # every check answered and nothing is missing
    MISSING = "missing"  # something missing, stale or corrupt (proven)
    UNKNOWN = "unknown"  # nothing missing seen, but some check could not be made


@dataclass(frozen=True, order=True)
class Finding:
    """One thing missing, stale or unreadable. ``parent`` names what refers to it (the
    index of a child, the manifest of a blob, the subject of a referrer), ``image`` the
    top-level digest it belongs to."""

    kind: str  # FINDING_KINDS
    repository: str
    digest: str | None = None
    tag: str | None = None
    parent: str | None = None
    image: str | None = None
    artifact_type: str | None = None
    target_digest: str | None = None  # a stale tag: what DR's tag points at
    reason: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or not {"kind", "repository"} <= set(data):
            raise ValueError("a finding needs kind and repository")
        values = {k: v for k, v in data.items() if k in names}
        if not all(v is None or isinstance(v, str) for v in values.values()):
            raise ValueError("finding fields are strings or null")
        if values["kind"] not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {values['kind']!r}")
        return cls(**values)


@dataclass(frozen=True)
class Checked:
    """What the audit looked at (each counted once per repository)."""

    tags: int = 0
    images: int = 0
    manifests: int = 0
    blobs: int = 0
    referrers: int = 0
    deep_blobs: int = 0
    deep_bytes: int = 0

    def plus(self, other: Checked) -> Checked:
        return Checked(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checked:
        values = {f.name: data.get(f.name, 0) for f in fields(cls)}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values.values()):
            raise ValueError("checked counts are integers")
        return cls(**values)


@dataclass(frozen=True)
class Findings:
    missing: tuple[Finding, ...] = ()
    stale: tuple[Finding, ...] = ()
    unreadable: tuple[Finding, ...] = ()

    def plus(self, other: Findings) -> Findings:
        return Findings(
            self.missing + other.missing,
            self.stale + other.stale,
            self.unreadable + other.unreadable,
        )

    def to_dict(self) -> dict[str, list[dict[str, str | None]]]:
        return {
            name: [f.to_dict() for f in sorted(getattr(self, name))]
            for name in ("missing", "stale", "unreadable")
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Findings:
        lists = [data.get(name) or [] for name in ("missing", "stale", "unreadable")]
        if not all(isinstance(items, list) for items in lists):
            raise ValueError("findings are lists")
        return cls(*(tuple(Finding.from_dict(item) for item in items) for items in lists))


@dataclass(frozen=True)
class VerifyReport:
    findings: Findings
    checked: Checked
    complete: bool = True  # False: a sweep stopped at its limit, or was deferred

    @property
    def verdict(self) -> Verdict:
        if self.findings.missing or self.findings.stale:
            return Verdict.MISSING
        return Verdict.UNKNOWN if self.findings.unreadable else Verdict.PROVEN

    def to_dict(self) -> dict[str, Any]:
        """``verify --json``: ``{"missing", "stale", "unreadable", "checked", "verdict"}``."""
        return {
            **self.findings.to_dict(),
            "checked": self.checked.to_dict(),
            "verdict": self.verdict.value,
        }


@dataclass(frozen=True, order=True)
class Image:
    """One image to walk: ``repository@digest``, and the in-step tags naming it."""

    repository: str
    digest: str
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.repository, self.digest)


@dataclass(frozen=True)
class TagCheck:
    images: tuple[Image, ...]  # in step by tag, sorted by (repository, digest)
    findings: Findings
    tags: int  # in-scope source tags looked at


def check_tags(
    source: Iterable[TagEntry],
    target: Iterable[TagEntry],
    filters: Filters,
    *,
    source_unread: Mapping[str, str] | None = None,
    target_unread: Mapping[str, str] | None = None,
) -> TagCheck:
    """Every in-scope source tag against DR's: missing, stale, or an image to walk. The
    repositories a side could not list (name -> why; ``""``: the catalog) are
    unreadable, not missing."""
    unread = {**(source_unread or {}), **(target_unread or {})}
    missing: list[Finding] = []
    stale: list[Finding] = []
    unreadable = [Finding("repository", r, reason=why) for r, why in sorted(unread.items())]
    if "" in unread:  # a catalog unread: no tag can be told missing
        return TagCheck((), Findings(unreadable=tuple(unreadable)), 0)
    there = {(e.repository, e.tag): e.digest for e in target}
    images: dict[tuple[str, str], list[str]] = {}
    tags = 0
    for entry in source:
        if entry.repository in unread or is_referrers_tag(entry.tag):
            continue
        if not filters.allows(entry.repository, entry.tag):
            continue
        tags += 1
        if entry.digest is None:
            unreadable.append(Finding("tag", entry.repository, None, entry.tag, reason="no digest"))
            continue
        if (entry.repository, entry.tag) not in there:
            missing.append(Finding("tag", entry.repository, entry.digest, entry.tag))
            continue
        other = there[(entry.repository, entry.tag)]
        if other != entry.digest:
            stale.append(
                Finding("tag", entry.repository, entry.digest, entry.tag, target_digest=other)
            )
            continue
        images.setdefault((entry.repository, entry.digest), []).append(entry.tag)
    found = tuple(Image(r, d, tuple(sorted(t))) for (r, d), t in sorted(images.items()))
    return TagCheck(found, Findings(tuple(missing), tuple(stale), tuple(unreadable)), tags)


def remaining(images: Sequence[Image], after: tuple[str, str] | None) -> list[Image]:
    """The images past ``after`` (the last one done), in order."""
    return [i for i in images if after is None or i.key > after]


def sweep_slice(
    images: Sequence[Image], after: tuple[str, str] | None, count: int
) -> tuple[list[Image], tuple[str, str] | None]:
    """The next ``count`` images of a rolling sweep after ``after``, wrapping round to the
    start; and the cursor for the next pass (None: the next pass starts over)."""
    ahead = remaining(images, after)
    chosen = ahead[:count]
    if len(chosen) < count and after is not None:  # past the end: start over
        chosen += [i for i in images if i.key <= after][: count - len(chosen)]
    return chosen, (chosen[-1].key if chosen else None)


@dataclass(frozen=True)
class BlobRef:
    repository: str
    digest: str
    size: int = -1
    image: str | None = None  # the top-level manifest of the image naming it


@dataclass
class Sample:
    """A uniform sample of ``size`` blobs out of all those seen (reservoir sampling,
    algorithm R): bounded memory whatever the registry's size; ``seed`` makes it
    repeatable. ``seen`` and ``items`` survive a resume."""

    size: int
    seed: int | None = None
    seen: int = 0
    items: list[BlobRef] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(None if self.seed is None else f"{self.seed}/{self.seen}")

    def offer(self, blob: BlobRef) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(blob)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = blob


@dataclass(frozen=True)
class Cursor:
    """Where an interrupted audit stopped: for ``scope`` (the audit's source, target,
    filters and depth), the last image done, what was found so far and the sample."""

    scope: Mapping[str, Any]
    after: tuple[str, str] | None = None
    findings: Findings = Findings()
    checked: Checked = Checked()
    sample_seen: int = 0
    sample: tuple[BlobRef, ...] = ()
    deep_done: int = 0  # sampled blobs already read (the deep phase runs last)

    def advance(self, **changes: Any) -> Cursor:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CURSOR_VERSION,
            "scope": dict(self.scope),
            "after": list(self.after) if self.after else None,
            "findings": self.findings.to_dict(),
            "checked": self.checked.to_dict(),
            "sample_seen": self.sample_seen,
            "sample": [[b.repository, b.digest, b.size, b.image] for b in self.sample],
            "deep_done": self.deep_done,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Cursor:
        """A cursor as saved; ``ValueError`` for anything else."""
        if not isinstance(data, dict) or data.get("version") != CURSOR_VERSION:
            raise ValueError(f"not a version {CURSOR_VERSION} verify cursor")
        after = data.get("after")
        if after is not None and not (
            isinstance(after, list) and len(after) == 2 and all(isinstance(a, str) for a in after)
        ):
            raise ValueError("after is [repository, digest] or null")
        sample = data.get("sample") or []
        if not isinstance(sample, list) or not all(_blob_row(b) for b in sample):
            raise ValueError("sample is a list of [repository, digest, size, image]")
        numbers = [data.get("sample_seen", 0), data.get("deep_done", 0)]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError("sample_seen and deep_done are counts")
        scope = data.get("scope")
        if not isinstance(scope, dict):
            raise ValueError("scope is an object")
        return cls(
            scope=scope,
            after=(after[0], after[1]) if after else None,
            findings=Findings.from_dict(data.get("findings") or {}),
            checked=Checked.from_dict(data.get("checked") or {}),
            sample_seen=numbers[0],
            sample=tuple(BlobRef(r, d, s, i) for r, d, s, i in sample),
            deep_done=numbers[1],
        )


def _blob_row(row: object) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 4
        and isinstance(row[0], str)
        and isinstance(row[1], str)
        and isinstance(row[2], int)
        and not isinstance(row[2], bool)
        and (row[3] is None or isinstance(row[3], str))
    )
