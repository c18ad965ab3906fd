"""What ARM answers, turned into the replicator's error tree.

::

    PermanentRegistryError
    └── ImportUnavailableError   import cannot work here, and a data-plane copy can: ``reason``
                                 says why (one of ``FALLBACK_REASONS``)

Refusals a copy can overcome (reference section 2): 403 ``LinkedAuthorizationFailed`` (the
identity cannot *read* the source registry: import by resource id needs the importer role
there, AcrPull is not enough; a copy needs only pull), 403 ``AuthorizationFailed`` on the
target (no ``importImage/action``; a copy needs only AcrPush), network refusals (private
endpoint, firewall, public access off, cross-cloud), more manifests than ImportImage takes,
and a target without an ARM id or identity. Status codes and the two authorization codes
are documented ARM behaviour; the texts of failed import operations are matched on the
fragments seen in public reports (``UNAUTHORIZED``, ``Unable to find manifest``, ``not
allowed access``), which Microsoft does not document: see docs/identity.md.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from azure.core.exceptions import HttpResponseError

from replicator.domain.errors import (
    NotFoundError,
    PermanentRegistryError,
    RegistryError,
    TransientRegistryError,
)

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
IMPORT_ROLE = "Container Registry Data Importer and Data Reader"
IMPORT_ROLE_ID = "577a9874-89fd-4f24-9dbd-b5034d0ad23a"

# Why an import was not used and a copy ran instead (the ``reason`` of the fallback metric).
SOURCE_READ = "source-read"  # 403 LinkedAuthorizationFailed
TARGET_AUTHORIZATION = "target-authorization"  # 403 AuthorizationFailed on the target
NETWORK = "network"  # private endpoint, firewall, public access off, cross-cloud
TOO_MANY_MANIFESTS = "too-many-manifests"  # over ImportImage's 50 manifests
NOT_CONFIGURED = "not-configured"  # the target has no resource id, or no Azure identity
FALLBACK_REASONS = (SOURCE_READ, TARGET_AUTHORIZATION, NETWORK, TOO_MANY_MANIFESTS, NOT_CONFIGURED)

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
_LINKED_SCOPE = re.compile(r"linked scope\(s\) '([^']+)'", re.IGNORECASE)
_REGISTRY_IN_ID = re.compile(r"/registries/([^/'\s]+)", re.IGNORECASE)


class ImportUnavailableError(PermanentRegistryError):
    """ImportImage cannot work for this pair of registries; a data-plane copy can.

    ``reason`` is one of ``FALLBACK_REASONS``."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = NETWORK,
        status: int | None = None,
        operation: str = "import",
        reference: str = "",
    ) -> None:
        super().__init__(message, status=status, operation=operation, reference=reference)
        self.reason = reason


class Classified(NamedTuple):
    kind: type[RegistryError]
    message: str
    reason: str | None = None  # the fallback reason when ``kind`` is ImportUnavailableError


def source_read_hint(source: str) -> str:
    """What to grant when ARM cannot read the source registry (LinkedAuthorizationFailed)."""
    return (
        f"the identity cannot read the source registry {source}: import by resource id needs "
        f"'{IMPORT_ROLE}' (id {IMPORT_ROLE_ID}) on the source registry {source} as well as on "
        "the target; AcrPull there is not enough for import (it is enough for a copy)"
    )


def target_role_hint(target: str) -> str:
    """What to grant when the identity may not import into the target (AuthorizationFailed)."""
    return (
        f"grant the replicator's identity '{IMPORT_ROLE}' (id {IMPORT_ROLE_ID}, or any role "
        f"with {IMPORT_ACTION}) on the target registry {target}; AcrPush alone is not enough "
        "for import (it is enough for a copy)"
    )


def classify(
    exc: HttpResponseError, *, reference: str, source: str = "", target: str = ""
) -> RegistryError:
    """Map one ARM failure (initial request or failed operation) to an error type.

    ``source`` and ``target`` name the registries in the hints (ARM's text names the source
    by resource id: that name wins when it is there)."""
    status = exc.status_code
    code = str(getattr(exc.error, "code", "") or "")
    text = f"{code} {getattr(exc.error, 'message', '') or exc.message}".strip()
    found = error_kind(status, code, text, source=source, target=target)
    if found.kind is ImportUnavailableError:
        return ImportUnavailableError(
            found.message, reason=found.reason or NETWORK, status=status, reference=reference
        )
    retry_after = _retry_after(exc) if found.kind is TransientRegistryError else None
    return found.kind(
        found.message,
        status=status,
        operation="import",
        reference=reference,
        retry_after=retry_after,
    )


def error_kind(
    status: int | None, code: str, text: str, *, source: str = "", target: str = ""
) -> Classified:
    lowered = text.lower()
    if status == 429:
        return Classified(TransientRegistryError, f"ARM throttled the import: {text}")
    if code == "LinkedAuthorizationFailed":
        named = _linked_registry(text) or source or "(the source)"
        message = f"import refused: {source_read_hint(named)} ({text})"
        return Classified(ImportUnavailableError, message, SOURCE_READ)
    if code == "AuthorizationFailed":
        message = f"import refused: {target_role_hint(target or '(the target)')} ({text})"
        return Classified(ImportUnavailableError, message, TARGET_AUTHORIZATION)
    if status == 403:
        hint = target_role_hint(target or "(the target)")
        return Classified(PermanentRegistryError, f"import not allowed: {hint} ({text})")
    if status == 401:
        return Classified(PermanentRegistryError, f"ARM rejected the credential: {text}")
    if code in {"ResourceNotFound", "ParentResourceNotFound", "SubscriptionNotFound"}:
        return Classified(PermanentRegistryError, f"target registry not found in ARM: {text}")
    if any(fragment in lowered for fragment in _NETWORK):
        return Classified(
            ImportUnavailableError, f"import cannot reach the source: {text}", NETWORK
        )
    if any(fragment in lowered for fragment in _MISSING) or status == 404:
        return Classified(NotFoundError, f"the source image is gone: {text}")
    if any(fragment in lowered for fragment in _UNAUTHORISED):
        return Classified(PermanentRegistryError, f"{SOURCE_ROLE_HINT} ({text})")
    return Classified(TransientRegistryError, f"import failed: {text}")


def _linked_registry(text: str) -> str | None:
    """The registry name in ARM's 'linked scope(s) '<resource id>'' phrase, if any."""
    scope = _LINKED_SCOPE.search(text)
    if scope is None:
        return None
    name = _REGISTRY_IN_ID.search(scope.group(1))
    return name.group(1) if name else scope.group(1)


def _retry_after(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
