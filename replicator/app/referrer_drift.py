"""Referrer drift: the referrers (signatures, SBOMs, attestations) the source lists for a
replicated manifest and DR does not. The decisions, pure: listings in, drift and jobs out.

For every image in step by tags (the same digest on both sides) and each of its manifests
(the index and its children, then, level by level, the referrers both sides hold), the
source's referrers are compared with DR's, as the app's ``ReferrerLister`` port lists
them (``replicator.adapters.oci.referrer_lister``: the referrers API, else the
``sha256-<hex>`` fallback tag). A referrer DR lacks becomes a push job for its digest,
the job a referrer's own push event makes (the worker copies or imports it with its own
referrers). A referrer only DR lists follows the delete policy: ``keep`` never deletes
and does not even list DR where the source has none; a propagating policy makes a delete
job for its digest, which the worker runs only while the source lacks it.

ListReferrers is ACR's tightest bucket (500 a minute per Standard registry, 250 per
identity; reference section 3), so a reconcile pass does not check every image: first
what changed since the last pass (the status table's recent results, and fallback tags
whose index moved), then a rolling sweep of the rest from a cursor (``plan_sweep``,
``advance``). A pass makes at most ``PASS_MINUTES`` of each registry's referrers budget
in calls (``pass_budget``, a count); the registry client's budget pacer, the one budget,
paces them. The checks are ``replicator.app.referrer_checks``; one reconcile pass, with
the cursor kept in the status table, is ``replicator.app.referrer_sweep``; ``diff
--referrers`` checks everything at once. bench/RESULTS.md, ``## referrers``, has the cost.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from replicator.domain.model import Action, CopyJob, Origin, TagEntry
from replicator.domain.planning import is_referrers_tag
from replicator.domain.referrers import ListedReferrer

MAX_DEPTH = 4  # referrers of referrers checked this deep (a copy brings deeper ones itself)
PASS_MINUTES = 10.0  # of each registry's referrers budget one reconcile pass may spend


def is_fallback_tag(tag: str) -> bool:
    """A referrers-tag-schema tag (``sha256-<hex>``): an index of referrers, not an image
    (``replicator.domain.planning.is_referrers_tag``, which tag drift leaves out too)."""
    return is_referrers_tag(tag)


@dataclass(frozen=True, order=True)
class Image:
    """A replicated image (a tag's manifest), named by repository and digest."""

    repository: str
    digest: str

    @property
    def key(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True, order=True)
class Referrer:
    """One referrer of ``subject``; the ``R`` of CONTRACT.md's ``diff --json``."""

    repository: str
    subject: str
    digest: str
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "repository": self.repository,
            "subject": self.subject,
            "digest": self.digest,
            "artifact_type": self.artifact_type,
        }


@dataclass(frozen=True)
class SubjectDrift:
    missing: tuple[Referrer, ...] = ()  # in the source, not in DR
    extra: tuple[Referrer, ...] = ()  # in DR, not in the source (listed only when deleting)
    both: tuple[str, ...] = ()  # referrers on both sides: their own referrers come next


def in_step_images(source: Iterable[TagEntry], target: Iterable[TagEntry]) -> tuple[Image, ...]:
    """The images whose tag holds the same digest on both sides, once each, by key.
    Fallback tags are indexes of referrers, not images: referrer drift counts them."""
    there = {(e.repository, e.tag): e.digest for e in target if e.digest}
    found = {
        Image(e.repository, e.digest)
        for e in source
        if e.digest and not is_fallback_tag(e.tag) and there.get((e.repository, e.tag)) == e.digest
    }
    return tuple(sorted(found, key=lambda i: i.key))


def changed_subjects(source: Iterable[TagEntry], target: Iterable[TagEntry]) -> frozenset[Image]:
    """Subjects whose fallback tag the source moved (or DR lacks): their referrers changed.
    A free signal, from the tag listing, on a source without the referrers API."""
    there = {(e.repository, e.tag): e.digest for e in target if is_fallback_tag(e.tag)}
    return frozenset(
        Image(e.repository, e.tag.replace("-", ":", 1))
        for e in source
        if is_fallback_tag(e.tag)
        and e.tag.startswith("sha256-")  # a longer digest's tag is cut: it names no digest
        and there.get((e.repository, e.tag)) != e.digest
    )


@dataclass(frozen=True)
class Sweep:
    """One pass's order: what changed first, then every image from the cursor on, once."""

    priority: tuple[Image, ...]
    rolling: tuple[Image, ...]
    tail: int  # how many of ``rolling`` come after the cursor (then it wraps to the start)


def plan_sweep(images: Sequence[Image], cursor: str, changed: Collection[Image]) -> Sweep:
    ordered = sorted(images, key=lambda i: i.key)
    start = bisect.bisect_right([i.key for i in ordered], cursor) if cursor else 0
    priority = tuple(i for i in ordered if i in changed)
    return Sweep(priority, tuple(ordered[start:] + ordered[:start]), len(ordered) - start)


def advance(sweep: Sweep, done: int, cursor: str) -> tuple[str, bool]:
    """The cursor after the first ``done`` images of the rolling sweep, and whether the
    sweep passed the end of the registry (a lap completed)."""
    if done <= 0 or not sweep.rolling:
        return cursor, False
    done = min(done, len(sweep.rolling))
    if done < sweep.tail:
        return sweep.rolling[done - 1].key, False
    return ("" if done == sweep.tail else sweep.rolling[done - 1].key), True


def compare_subject(
    repository: str,
    subject: str,
    source: Iterable[ListedReferrer],
    target: Iterable[ListedReferrer] | None,
    *,
    delete_extra: bool,
) -> SubjectDrift:
    """The drift of one subject from both listings (``target`` None: DR not listed)."""
    wanted = {r.digest: r.artifact_type for r in source}
    there = {r.digest: r.artifact_type for r in target or ()}
    missing = [Referrer(repository, subject, d, t) for d, t in wanted.items() if d not in there]
    extra = []
    if delete_extra and target is not None:
        extra = [Referrer(repository, subject, d, t) for d, t in there.items() if d not in wanted]
    both = tuple(d for d in wanted if d in there)
    return SubjectDrift(tuple(missing), tuple(extra), both)


def needs_target(source: Collection[object], *, delete_extra: bool) -> bool:
    """Whether DR's referrers of a subject must be listed: only where the source lists
    some, unless extras are to be deleted (under ``keep`` an extra changes nothing)."""
    return bool(source) or delete_extra


def referrer_jobs(
    missing: Iterable[Referrer],
    extra: Iterable[Referrer],
    *,
    source: str,
    target: str,
    origin: Origin,
    delete_extra: bool,
) -> list[CopyJob]:
    """A push job per missing referrer (by digest, no tag), a delete job per extra one
    when the delete policy deletes; each referrer once."""
    pushes = dict.fromkeys((r.repository, r.digest) for r in missing)
    jobs = [CopyJob(Action.PUSH, source, target, r, d, origin=origin) for r, d in pushes]
    if delete_extra:
        deletes = dict.fromkeys((r.repository, r.digest) for r in extra)
        jobs += [CopyJob(Action.DELETE, source, target, r, d, origin=origin) for r, d in deletes]
    return jobs


def pass_budget(rate_per_minute: float | None, minutes: float | None) -> int | None:
    """Referrers calls one pass may make on a registry (None: no limit)."""
    if rate_per_minute is None or minutes is None:
        return None
    return max(1, math.floor(rate_per_minute * minutes))


def sweep_minutes(manifests: int, rate_per_minute: float | None) -> float | None:
    """Minutes ``manifests`` referrers calls take at ``rate_per_minute`` (None: unpaced)."""
    return None if rate_per_minute is None else manifests / rate_per_minute


def read_through(unread: Sequence[bool]) -> int:
    """How many of a pass's rolling checks, in order, the cursor may pass: up to the first
    one left unread (a transient failure: the next pass starts there and reads it again),
    but always past the first (an image that can never be read must not hold the sweep)."""
    return next((i for i, left in enumerate(unread) if left and i > 0), len(unread))


def rolled(sweep: Sweep, seen: Collection[Image], checked: int) -> int:
    """How far into ``sweep.rolling`` the pass got: ``checked`` images, skipping the ones
    the priority part already checked."""
    count = 0
    for image in sweep.rolling:
        if image in seen:
            count += 1
            continue
        if checked == 0:
            break
        checked -= 1
        count += 1
    return count
