"""What ARM answers, turned into the replicator's error tree.

::

    PermanentRegistryError
    └── ImportUnavailableError   import cannot work here (network-restricted source or
                                 target, private endpoint, public access off, cross-cloud,
                                 no resource id): a data-plane copy can take over

The classification reads ARM's status and error body. Status codes and ``AuthorizationFailed``
are documented ARM behaviour; the texts of failed import operations are matched on the
fragments seen in public reports (``UNAUTHORIZED``, ``Unable to find manifest``, ``not
allowed access``), which Microsoft does not document: see docs/identity.md.
"""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError

from replicator.errors import (
    NotFoundError,
    PermanentRegistryError,
    RegistryError,
    TransientRegistryError,
)

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
IMPORT_ROLE = "Container Registry Data Importer and Data Reader"
IMPORT_ROLE_ID = "577a9874-89fd-4f24-9dbd-b5034d0ad23a"
TARGET_ROLE_HINT = (
    f"grant the replicator's identity '{IMPORT_ROLE}' (or any role with {IMPORT_ACTION}) "
    "on the target registry; AcrPush alone is not enough"
)
SOURCE_ROLE_HINT = (
    "the target registry could not pull from the source: grant the identity (across "
    "tenants: the federated app's service principal in the source tenant) AcrPull on the source"
)
_NETWORK = (
    "not allowed access",
    "firewall",
    "private endpoint",
    "privateendpoint",
    "public network access",
    "publicnetworkaccess",
    "network rule",
    "trusted service",
    "cross-cloud",
    "different cloud",
)
_MISSING = ("manifest_unknown", "name_unknown", "unable to find manifest", "not found")
_UNAUTHORISED = ("unauthorized", "denied", "authentication required", "forbidden")


class ImportUnavailableError(PermanentRegistryError):
    """ImportImage cannot work for this pair of registries; a data-plane copy can."""


def classify(exc: HttpResponseError, *, reference: str) -> RegistryError:
    """Map one ARM failure (initial request or failed operation) to an error type."""
    status = exc.status_code
    code = str(getattr(exc.error, "code", "") or "")
    text = f"{code} {getattr(exc.error, 'message', '') or exc.message}".strip()
    kind, message = error_kind(status, code, text)
    retry_after = _retry_after(exc) if kind is TransientRegistryError else None
    return kind(
        message, status=status, operation="import", reference=reference, retry_after=retry_after
    )


def error_kind(status: int | None, code: str, text: str) -> tuple[type[RegistryError], str]:
    lowered = text.lower()
    if status == 429:
        return TransientRegistryError, f"ARM throttled the import: {text}"
    if code in {"AuthorizationFailed", "LinkedAuthorizationFailed"} or status == 403:
        return PermanentRegistryError, f"import not allowed: {TARGET_ROLE_HINT} ({text})"
    if status == 401:
        return PermanentRegistryError, f"ARM rejected the credential: {text}"
    if code in {"ResourceNotFound", "ParentResourceNotFound", "SubscriptionNotFound"}:
        return PermanentRegistryError, f"target registry not found in ARM: {text}"
    if any(fragment in lowered for fragment in _NETWORK):
        return ImportUnavailableError, f"import cannot reach the source: {text}"
    if any(fragment in lowered for fragment in _MISSING) or status == 404:
        return NotFoundError, f"the source image is gone: {text}"
    if any(fragment in lowered for fragment in _UNAUTHORISED):
        return PermanentRegistryError, f"{SOURCE_ROLE_HINT} ({text})"
    return TransientRegistryError, f"import failed: {text}"


def _retry_after(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
