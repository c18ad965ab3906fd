"""Untag in the DR registry: remove one tag, never the manifest it points at.

An extra DR tag whose digest the source still holds under another tag must lose the tag
only: deleting the manifest by digest would take the source-held tag with it.

- ACR: ``DELETE /acr/v1/{name}/_tags/{reference}`` (operation ``ContainerRegistry_DeleteTag``
  of the ACR data-plane spec, azure-rest-api-specs
  ``specification/containerregistry/data-plane/Azure.ContainerRegistry/stable/2021-07-01/
  containerregistry.json``): 202 "The tag is deleted", 404 "The tag was not found", else an
  ``AcrErrors`` body. It is a delete on the repository: the token scope is
  ``repository:<name>:delete`` (the AcrDelete role's ``artifacts/delete`` data action).
- Elsewhere: the OCI tag delete, ``DELETE /v2/<name>/manifests/<tag>`` (distribution-spec
  "Deleting tags"), which a registry may refuse with 400 or 405 (distribution 2.8 answers
  400: ``UNSUPPORTED``, or ``DIGEST_INVALID`` from the 2.8.2 build tested here). A refusal
  is an answer, not a failure: the tag stays, the caller reports it and does not try
  again; it never falls back to a delete by digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import httpx

from replicator.adapters.oci.transport import error_codes, error_for
from replicator.domain.model import is_acr_host

REFUSED_STATUSES = frozenset({400, 405})  # the registry does not delete tags


class TagRequester(Protocol):
    """The slice of ``replicator.adapters.oci`` RegistryClient that a tag delete needs."""

    def request(
        self,
        method: str,
        path: str,
        *,
        scopes: Iterable[str] = (),
        operation: str = "",
        reference: str = "",
    ) -> httpx.Response: ...


@dataclass(frozen=True)
class TagDelete:
    """What a tag delete did: ``removed`` (deleted, or already absent), or ``refused``
    (the registry does not delete tags; the reason names its status and error code)."""

    removed: bool
    refused: str | None = None
    api: str = "oci"  # acr | oci: which API was asked


def delete_tag(
    client: TagRequester, registry: str, repository: str, tag: str, *, acr: bool | None = None
) -> TagDelete:
    """Remove ``repository:tag`` in ``registry``; raises only what a retry or a fix of the
    set-up can cure (429/5xx transient, 401/403 permanent)."""
    use_acr = is_acr_host(registry) if acr is None else acr
    reference = f"{registry}/{repository}:{tag}"
    if use_acr:
        path, operation = f"/acr/v1/{repository}/_tags/{tag}", "DELETE tag (ACR)"
    else:
        path, operation = f"/v2/{repository}/manifests/{tag}", "DELETE tag"
    response = client.request(
        "DELETE",
        path,
        scopes=(f"repository:{repository}:delete",),
        operation=operation,
        reference=reference,
    )
    api = "acr" if use_acr else "oci"
    status = response.status_code
    if status in (200, 202, 204, 404):  # 404: the tag is gone already
        response.close()
        return TagDelete(removed=True, api=api)
    if status in REFUSED_STATUSES and not use_acr:
        codes = ", ".join(error_codes(response))[:200]
        response.close()
        why = f"{registry} refuses tag deletes (HTTP {status}{', ' + codes if codes else ''})"
        return TagDelete(removed=False, refused=why, api=api)
    raise error_for(response, operation, reference)
