"""Drift between two listings, and the jobs that close it. Pure: values in, values out.

``plan(source, target, filters, delete_policy)`` compares ``repository:tag -> digest`` on
both sides: a tag only in the source is *missing*, a tag at another digest is *stale*, a
tag only in the target is *extra*. Extras are always reported; they become delete jobs
only when the delete policy propagates deletes. An extra whose digest the source still
holds under another tag is also *retagged*: its job untags (never deletes by digest), and
for a target that refuses tag deletes it gets no job at all (reported, not re-queued).
``jobs_for`` turns a plan into jobs.

Tags of the referrers tag schema (``<alg>-<hex>``, distribution spec 1.1, "Referrers Tag
Schema") are left out on both sides: such a tag is the index of a manifest's referrers on a
registry without the referrers API, kept up to date by whoever copies the referrers, and
absent by design from a registry with the API. Replicated, diffed or deleted as tags of
their own, they would be written into a registry with the API, and a pair of registries of
the two kinds would never be in step; referrer drift is compared by referrer instead.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from replicator.domain.config import DeletePolicy, Settings
from replicator.domain.filters import Filters
from replicator.domain.model import Action, CopyJob, Origin, TagEntry

KINDS = ("missing", "stale", "extra")
# "Referrers Tag Schema": <alg>-<ref>, <ref> the subject digest's hex, at most 64 characters
REFERRERS_TAG = re.compile(r"(?:sha256|sha512)-[0-9a-f]{64}")


def is_referrers_tag(tag: str) -> bool:
    """Whether ``tag`` names a referrers index (``sha256-<64 hex>``), not an image."""
    return REFERRERS_TAG.fullmatch(tag) is not None


@dataclass(frozen=True, order=True)
class DriftEntry:
    """One tag out of step; the ``E`` of CONTRACT.md's ``diff --json``."""

    repository: str
    tag: str
    source_digest: str | None
    target_digest: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "source_digest": self.source_digest,
            "target_digest": self.target_digest,
        }


@dataclass(frozen=True)
class Plan:
    missing: tuple[DriftEntry, ...] = ()
    stale: tuple[DriftEntry, ...] = ()
    extra: tuple[DriftEntry, ...] = ()
    retagged: tuple[DriftEntry, ...] = ()  # extras whose digest the source holds elsewhere
    in_step: int = 0  # tags present on both sides at the same digest
    delete_extra: bool = False  # the delete policy propagates deletes
    source: str = ""  # registries the plan was made for ("" = the configured ones)
    target: str = ""

    @property
    def drift(self) -> bool:
        return bool(self.missing or self.stale or self.extra)

    @property
    def to_copy(self) -> tuple[DriftEntry, ...]:
        return self.missing + self.stale

    def counts(self) -> dict[str, int]:
        return {"missing": len(self.missing), "stale": len(self.stale), "extra": len(self.extra)}

    def to_dict(self) -> dict[str, list[dict[str, str | None]]]:
        """CONTRACT.md's ``diff --json`` object."""
        return {
            "missing": [e.to_dict() for e in self.missing],
            "stale": [e.to_dict() for e in self.stale],
            "extra": [e.to_dict() for e in self.extra],
        }


def _index(entries: Iterable[TagEntry], filters: Filters) -> dict[tuple[str, str], str | None]:
    return {
        (e.repository, e.tag): e.digest
        for e in entries
        if not is_referrers_tag(e.tag) and filters.allows(e.repository, e.tag)
    }


def plan(
    source_entries: Iterable[TagEntry],
    target_entries: Iterable[TagEntry],
    filters: Filters,
    delete_policy: DeletePolicy,
    *,
    source: str = "",
    target: str = "",
) -> Plan:
    """Compare the two listings, under the filters. A digest that one side could not tell
    (``None``) counts as different: the worker checks again before copying anything."""
    source_list = list(source_entries)
    have = _index(source_list, filters)
    want = _index(target_entries, filters)
    held = {(e.repository, e.digest) for e in source_list if e.digest is not None}
    missing: list[DriftEntry] = []
    stale: list[DriftEntry] = []
    in_step = 0
    for (repository, tag), digest in have.items():
        if (repository, tag) not in want:
            missing.append(DriftEntry(repository, tag, digest, None))
            continue
        other = want[(repository, tag)]
        if digest is None or digest != other:
            stale.append(DriftEntry(repository, tag, digest, other))
        else:
            in_step += 1
    extra = [DriftEntry(r, t, None, d) for (r, t), d in want.items() if (r, t) not in have]
    retagged = [e for e in extra if (e.repository, e.target_digest) in held]
    return Plan(
        missing=tuple(sorted(missing)),
        stale=tuple(sorted(stale)),
        extra=tuple(sorted(extra)),
        retagged=tuple(sorted(retagged)),
        in_step=in_step,
        delete_extra=delete_policy.deletes,
        source=source,
        target=target,
    )


def jobs_for(
    plan: Plan,
    settings: Settings,
    origin: Origin,
    *,
    target: str | None = None,
    untag_refused: Collection[str] = (),
) -> list[CopyJob]:
    """A push job per missing or stale tag (and a delete job per extra when the policy
    propagates deletes) for ``target``, else the plan's target, else every configured one.
    Entries whose digest is unknown get no job: the next run will see them again; nor do
    retagged extras on a target in ``untag_refused`` (it refuses tag deletes)."""
    source = plan.source or settings.source
    chosen = target or plan.target
    targets = [chosen] if chosen else [t.login_server for t in settings.targets]
    jobs: list[CopyJob] = []
    for login_server in targets:
        for entry in plan.to_copy:
            if entry.source_digest is None:
                continue
            jobs.append(_job(Action.PUSH, source, login_server, entry, entry.source_digest, origin))
        if not plan.delete_extra:
            continue
        skip = set(plan.retagged) if login_server in untag_refused else set()
        for entry in plan.extra:
            if entry.target_digest is not None and entry not in skip:
                jobs.append(
                    _job(Action.DELETE, source, login_server, entry, entry.target_digest, origin)
                )
    return jobs


def _job(
    action: Action, source: str, target: str, entry: DriftEntry, digest: str, origin: Origin
) -> CopyJob:
    return CopyJob(
        action=action,
        source=source,
        target=target,
        repository=entry.repository,
        digest=digest,
        tag=entry.tag,
        origin=origin,
    )
