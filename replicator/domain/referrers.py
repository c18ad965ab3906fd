"""A referrer as a listing names it: what crosses the app's ``ReferrerLister`` port.

The referrers of a subject come from the referrers API's OCI index or from the fallback
tag's index (opencontainers/distribution-spec v1.1, "Listing Referrers" and "Referrers
Tag Schema"); either way each entry is an OCI descriptor with an optional
``artifactType``. ``listed_referrers`` turns another party's descriptors into these frozen
values, once per digest, dropping any whose digest is not one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from replicator.domain.reference import DIGEST_RE


@dataclass(frozen=True, order=True)
class ListedReferrer:
    """One referrer of a subject: its manifest's digest and its artifact type."""

    digest: str
    artifact_type: str | None = None


def listed_referrers(descriptors: Iterable[Mapping[str, object]]) -> tuple[ListedReferrer, ...]:
    """The referrers ``descriptors`` name, in their order, each digest once; an entry
    without a well-formed digest (another party's answer) is left out."""
    found: dict[str, str | None] = {}
    for descriptor in descriptors:
        digest, kind = descriptor.get("digest"), descriptor.get("artifactType")
        if isinstance(digest, str) and DIGEST_RE.match(digest) and digest not in found:
            found[digest] = kind if isinstance(kind, str) else None
    return tuple(ListedReferrer(d, t) for d, t in found.items())
