"""Referrers: the artifacts (signatures, SBOMs, attestations) whose ``subject`` is a manifest.

Listed with the referrers API (``GET /v2/<name>/referrers/<digest>``) where a registry has
it, else from the fallback tag ``<alg>-<hex>`` holding an OCI index of them (distribution
spec 1.1, "referrers tag schema"). Whether a registry has the API is learnt once per
registry from the API itself, and only a 404 says it has not: a 403 or 5xx on one
repository is that image's error, and a fallback tag is never written into a registry
with the API. Pages are followed on the registry's own origin only, each read bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.paging import UnreadListing, follow_pages
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import error_for, read_limited
from replicator.domain.errors import NotFoundError, PermanentRegistryError
from replicator.domain.manifests import OCI_INDEX, Manifest
from replicator.domain.reference import ImageRef

MAX_PAGE_BYTES = 16 * 1024 * 1024  # an index of 10,000 referrers is about 3 MiB
MAX_PAGES = 1_000


def fallback_tag(digest: str) -> str:
    """The referrers tag of ``digest``: ``<alg>-<ref>``, ``<ref>`` its encoded part cut to
    64 characters (distribution spec 1.1, "Referrers Tag Schema")."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_[:64]}"


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
    """The referrers by the API, or None when the registry has no such API.

    Only a 404 says "no referrers API" (distribution spec 1.1, "Listing Referrers": a
    registry with the API MUST NOT answer 404, and a client receiving one falls back to
    the tag schema). Any other refusal (403, 5xx), or an answer that is not an OCI index,
    is this image's error and says nothing of the registry; a listing cut short (a link
    off the registry's origin, a page over the bound) is reported unread.
    """
    reference = f"{repository}@{digest}"
    what = f"referrers of {client.host}/{reference}"
    absent: list[bool] = []  # the first page was a 404

    def fetch(path: str) -> httpx.Response | None:
        # The page's body is read inside the retry too: a listing cut off mid-body (a reset,
        # a truncated answer) is sent again, under the same operation's budget.
        return client.retry.run(what, lambda: fetch_once(path))

    def fetch_once(path: str) -> httpx.Response | None:
        response = client.request(
            "GET",
            path,
            headers={"Accept": OCI_INDEX},
            operation="GET referrers",
            reference=reference,
            stream=True,
        )
        try:
            if response.status_code == 404 and path == first:
                absent.append(True)
                return None
            return _page(response, what, reference)
        finally:
            response.close()

    first = f"/v2/{repository}/referrers/{digest}"
    descriptors: list[dict[str, Any]] = []
    for page in follow_pages(first, fetch, home=client.base, what=what, max_pages=MAX_PAGES):
        descriptors += _descriptors(page, what)
    if absent:
        if registries.referrers_api.get(client.host):
            raise PermanentRegistryError(
                f"{what}: HTTP 404 from a registry that has the referrers API",
                status=404,
                operation="GET referrers",
                reference=reference,
            )
        registries.referrers_api[client.host] = False
        return None
    registries.referrers_api[client.host] = True
    return Referrers(tuple(descriptors))


def _page(response: httpx.Response, what: str, reference: str) -> httpx.Response:
    """One page of the referrers API, its body read bounded."""
    status = response.status_code
    if status != 200:
        raise error_for(response, "GET referrers", reference)
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if kind != OCI_INDEX:
        raise UnreadListing(
            f"{what}: answered {kind or 'no Content-Type'}, not an OCI index",
            status=status,
            operation="GET referrers",
            reference=reference,
        )
    body = read_limited(response, what, limit=MAX_PAGE_BYTES, what="referrers listing")
    return httpx.Response(status, headers=response.headers, content=body, request=response.request)


def _descriptors(page: httpx.Response, what: str) -> list[dict[str, Any]]:
    try:
        body = page.json()
    except ValueError:
        raise UnreadListing(f"{what}: a page that is not JSON", reference=what) from None
    found = body.get("manifests") if isinstance(body, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _from_fallback(client: RegistryClient, repository: str, digest: str) -> Referrers:
    ref = ImageRef(client.host, repository, fallback_tag(digest))
    try:
        index = client.get_manifest(ref)
    except NotFoundError:
        return Referrers()
    found = [d for d in index.json.get("manifests") or [] if isinstance(d, dict)]
    return Referrers(tuple(found), index)


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
