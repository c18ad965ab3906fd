"""What one job's ImportImage calls bring, decided before ARM is called. Pure: the reads of
the source come in as functions.

- ImportImage takes at most 50 manifests per imported image [reference section 2, IMPDOC].
  Whether the index itself counts toward the 50 is UNCONFIRMED, so both readings are met:
  the index and its children (nested indexes and theirs) together stay one under, at most
  ``IMPORT_MANIFEST_BUDGET`` = 49. Past that ``auto`` copies and ``import`` fails, at once,
  instead of an undocumented ARM error retried until the message is poisoned.
- ImportImage does not copy referrers (signatures, SBOMs) [reference section 2; what
  dotnet/docker-tools#2003 works around]: each one, and each referrer of a referrer, is
  brought by its own ImportImage by digest, subjects before their referrers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from replicator.adapters.acr.errors import TOO_MANY_MANIFESTS, ImportUnavailableError
from replicator.domain.manifests import INDEX_TYPES, Manifest, child_descriptors

MAX_IMPORT_MANIFESTS = 50  # per imported image [IMPDOC]
IMPORT_MANIFEST_BUDGET = MAX_IMPORT_MANIFESTS - 1  # the index may count: stay one under
MAX_REFERRER_DEPTH = 8  # referrers of referrers of ...: as deep as the data-plane copy goes

Fetch = Callable[[str], Manifest]  # digest -> the source's manifest
# subject digest -> the descriptors of its referrers (``digest``, ``mediaType``)
ListReferrers = Callable[[str], Iterable[Mapping[str, object]]]


@dataclass(frozen=True)
class ImportPlan:
    """One image by import: its manifest count, and the referrers to import after it
    (each by its own ImportImage, a subject always before its referrers)."""

    digest: str
    manifests: int
    subjects: tuple[str, ...]  # the image's own manifests: the index and its children
    referrers: tuple[str, ...] = ()
    # referrer indexes over the budget, with their manifest counts: no import for them
    oversized: tuple[tuple[str, int], ...] = ()


def count_manifests(top: Manifest, fetch: Fetch) -> tuple[int, tuple[str, ...]]:
    """How many manifests importing ``top`` moves (``top`` included), and their digests.
    Nested indexes are fetched to count their children; image manifests are not."""
    seen: dict[str, None] = {top.digest: None}
    pending = [top]
    while pending:
        manifest = pending.pop()
        for child in child_descriptors(manifest):
            digest = str(child.get("digest"))
            if digest in seen:
                continue
            seen[digest] = None
            if child.get("mediaType") in INDEX_TYPES:
                pending.append(fetch(digest))
    return len(seen), tuple(seen)


def check_manifest_count(reference: str, count: int) -> None:
    """Refuse an import of more manifests than ImportImage takes (see the module's note)."""
    if count > IMPORT_MANIFEST_BUDGET:
        raise ImportUnavailableError(
            f"{reference} has {count} manifests (the index and its children): ImportImage "
            f"takes at most {MAX_IMPORT_MANIFESTS} per image, and this replicator imports at "
            f"most {IMPORT_MANIFEST_BUDGET} (whether the index counts is not documented)",
            reason=TOO_MANY_MANIFESTS,
            reference=reference,
        )


def referrer_order(subjects: Iterable[str], listed: ListReferrers) -> tuple[str, ...]:
    """Every referrer of ``subjects``, recursively (to ``MAX_REFERRER_DEPTH``), once each,
    breadth first: a subject comes before its referrers."""
    return tuple(referrer_descriptors(subjects, listed))


def referrer_descriptors(
    subjects: Iterable[str], listed: ListReferrers
) -> dict[str, Mapping[str, object]]:
    """``referrer_order`` with each referrer's descriptor, in that order."""
    seen = dict.fromkeys(subjects)
    order: dict[str, Mapping[str, object]] = {}
    level = list(seen)
    for _ in range(MAX_REFERRER_DEPTH):
        found: list[str] = []
        for subject in level:
            for descriptor in listed(subject):
                digest = str(descriptor.get("digest"))
                if digest not in seen:
                    seen[digest] = None
                    order[digest] = descriptor
                    found.append(digest)
        level = found
        if not level:
            break
    return order


def plan_import(reference: str, top: Manifest, fetch: Fetch, listed: ListReferrers) -> ImportPlan:
    """The plan for importing ``top``: raises ``ImportUnavailableError`` (too many
    manifests) before any referrer is listed. A referrer that is an index is counted the
    same way (each referrer is its own import); those over the budget are ``oversized``."""
    count, subjects = count_manifests(top, fetch)
    check_manifest_count(reference, count)
    referrers = referrer_descriptors(subjects, listed)
    counted = (
        (digest, count_manifests(fetch(digest), fetch)[0])
        for digest, descriptor in referrers.items()
        if descriptor.get("mediaType") in INDEX_TYPES
    )
    oversized = tuple((d, n) for d, n in counted if n > IMPORT_MANIFEST_BUDGET)
    return ImportPlan(top.digest, count, subjects, tuple(referrers), oversized)
