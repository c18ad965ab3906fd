"""Referrers: the artifacts (signatures, SBOMs, attestations) whose ``subject`` is a manifest.

Listed with the referrers API (``GET /v2/<name>/referrers/<digest>``) where a registry has
it, else from the fallback tag ``<alg>-<hex>`` holding an OCI index of them (distribution
spec 1.1, "referrers tag schema"). A registry with the API never answers that call 404,
so a 404 means "no API" and is remembered per host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from replicator.errors import NotFoundError
from replicator.oci.client import RegistryClient
from replicator.oci.manifests import OCI_INDEX, Manifest
from replicator.oci.reference import ImageRef
from replicator.oci.registries import Registries


def fallback_tag(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}"[:128]


@dataclass(frozen=True)
class Referrers:
    """The referrers of one subject: descriptors, and the fallback index they came from."""

    descriptors: tuple[dict[str, Any], ...] = ()
    fallback: Manifest | None = None  # the fallback tag's index, when that is where they are

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(str(d.get("digest")) for d in self.descriptors)


def list_referrers(
    registries: Registries,
    client: RegistryClient,
    repository: str,
    digest: str,
    *,
    fallback_first: bool = False,
) -> Referrers:
    """Every referrer of ``repository@digest``, by the API or the fallback tag."""
    known = registries.referrers_api.get(client.host)
    if known is None and fallback_first:
        found = _from_fallback(client, repository, digest)
        if found.descriptors:
            return found
    if known is not False:
        from_api = _from_api(registries, client, repository, digest)
        if from_api is not None:
            return from_api
    return _from_fallback(client, repository, digest)


def _from_api(
    registries: Registries, client: RegistryClient, repository: str, digest: str
) -> Referrers | None:
    path: str | None = f"/v2/{repository}/referrers/{digest}"
    descriptors: list[dict[str, Any]] = []
    while path:
        response = client.request(
            "GET",
            path,
            headers={"Accept": OCI_INDEX},
            operation="GET referrers",
            reference=f"{repository}@{digest}",
        )
        kind = response.headers.get("Content-Type", "").split(";", 1)[0]
        if response.status_code != 200 or kind != OCI_INDEX:
            registries.referrers_api[client.host] = False
            return None
        registries.referrers_api[client.host] = True
        descriptors += [d for d in response.json().get("manifests") or [] if isinstance(d, dict)]
        path = _next_link(response.headers.get("Link", ""))
    return Referrers(tuple(descriptors))


def _from_fallback(client: RegistryClient, repository: str, digest: str) -> Referrers:
    ref = ImageRef(client.host, repository, fallback_tag(digest))
    try:
        index = client.get_manifest(ref)
    except NotFoundError:
        return Referrers()
    found = [d for d in index.json.get("manifests") or [] if isinstance(d, dict)]
    return Referrers(tuple(found), index)


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        if 'rel="next"' in part and "<" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return None


def update_fallback(
    client: RegistryClient, repository: str, subject: str, wanted: Referrers
) -> bool:
    """Make the target's fallback tag list every wanted referrer; True if it was written.

    When the target has no index yet (or a subset of the source's), the source's own index
    is pushed byte for byte, so the tag's digest is the same on both sides.
    """
    current = _from_fallback(client, repository, subject)
    if wanted.digests <= current.digests:
        return False
    ref = ImageRef(client.host, repository, fallback_tag(subject))
    if wanted.fallback is not None and current.digests <= wanted.digests:
        client.put_manifest(ref, wanted.fallback)
        return True
    merged = list(current.descriptors)
    merged += [d for d in wanted.descriptors if d.get("digest") not in current.digests]
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": merged}, separators=(",", ":")
    ).encode()
    client.put_manifest(ref, Manifest.from_bytes(body, OCI_INDEX))
    return True
