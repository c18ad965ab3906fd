from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format

from replicator.adapters.acr.errors import (
    IMPORT_ROLE,
    NETWORK,
    SOURCE_READ,
    TARGET_AUTHORIZATION,
    ImportUnavailableError,
    classify,
    error_kind,
)
from replicator.domain.errors import (
    NotFoundError,
    PermanentRegistryError,
    RegistryError,
    TransientRegistryError,
)

OP = "Operation registries-1 failed. Resource /subscriptions/s/.../registries/dr"
CASES = [
    ("throttled", 429, "TooManyRequests", "throttled", TransientRegistryError, "throttled"),
    (
        "arm-forbidden",
        403,
        "AuthorizationFailed",
        "no importImage/action",
        ImportUnavailableError,
        "Data Importer and Data Reader",
    ),
    (
        "linked-forbidden",
        403,
        "LinkedAuthorizationFailed",
        "source scope",
        ImportUnavailableError,
        "cannot read the source registry",
    ),
    (
        "other-forbidden",
        403,
        "RequestDisallowedByPolicy",
        "a policy denies it",
        PermanentRegistryError,
        "AcrPush alone is not enough",
    ),
    (
        "bad-token",
        401,
        "InvalidAuthenticationToken",
        "expired",
        PermanentRegistryError,
        "rejected the credential",
    ),
    ("no-target", 404, "ResourceNotFound", "registry", PermanentRegistryError, "target registry"),
    (
        "firewall",
        200,
        "InvalidParameters",
        f"{OP} denied: client with IP '1.2.3.4' is not allowed access",
        ImportUnavailableError,
        "cannot reach",
    ),
    (
        "public-off",
        200,
        "InvalidParameters",
        f"{OP} public network access is disabled",
        ImportUnavailableError,
        "cannot reach",
    ),
    (
        "cross-cloud",
        400,
        "InvalidParameters",
        "import across a different cloud",
        ImportUnavailableError,
        "cannot reach",
    ),
    (
        "gone",
        200,
        "InvalidParameters",
        f"{OP} Unable to find manifest digest",
        NotFoundError,
        "gone",
    ),
    ("manifest-unknown", 200, "InvalidParameters", f"{OP} MANIFEST_UNKNOWN", NotFoundError, "gone"),
    (
        "source-unauthorised",
        200,
        "InvalidParameters",
        f'{OP} Unauthorized {{"errors":[{{"code":"UNAUTHORIZED"}}]}}',
        PermanentRegistryError,
        "AcrPull on the source",
    ),
    (
        "blobs",
        200,
        "InvalidParameters",
        f"{OP} Error copying blobs",
        TransientRegistryError,
        "import failed",
    ),
    ("internal", 500, "InternalServerError", "oops", TransientRegistryError, "import failed"),
]


@pytest.mark.parametrize(
    ("status", "code", "text", "kind", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_error_kind(
    status: int, code: str, text: str, kind: type[RegistryError], fragment: str
) -> None:
    found = error_kind(status, code, f"{code} {text}")
    assert found.kind is kind
    assert fragment in found.message
    assert (found.reason is not None) is (kind is ImportUnavailableError)


# ARM's LinkedAuthorizationFailed text, in the shape Azure/acr#237 quotes (ids shortened)
LINKED = (
    "The client 'c1' with object id 'o1' has permission to perform action "
    "'Microsoft.ContainerRegistry/registries/importImage/action' on scope "
    "'/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/"
    "contosodr'; however, it does not have permission to perform action 'read' on the linked "
    "scope(s) '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/"
    "registries/contososrc' or the linked scope(s) are invalid."
)


def test_linked_authorization_names_the_source_registry_and_the_importer_role() -> None:
    found = error_kind(403, "LinkedAuthorizationFailed", LINKED, target="contosodr.azurecr.io")
    assert found.kind is ImportUnavailableError
    assert found.reason == SOURCE_READ
    assert "source registry contososrc" in found.message
    assert f"'{IMPORT_ROLE}'" in found.message
    assert "on the source registry contososrc" in found.message
    assert "target registry" not in found.message.split("(", 1)[0]


def test_linked_authorization_without_a_scope_in_the_text_names_the_configured_source() -> None:
    found = error_kind(403, "LinkedAuthorizationFailed", "denied", source="src.azurecr.io")
    assert "source registry src.azurecr.io" in found.message


def test_authorization_failed_names_the_target_and_the_importer_role() -> None:
    found = error_kind(403, "AuthorizationFailed", "no import", target="contosodr.azurecr.io")
    assert found.kind is ImportUnavailableError
    assert found.reason == TARGET_AUTHORIZATION
    assert f"'{IMPORT_ROLE}'" in found.message
    assert "on the target registry contosodr.azurecr.io" in found.message


def _arm_error(status: int, code: str, message: str) -> HttpResponseError:
    exc = HttpResponseError(message=message)
    exc.status_code = status
    exc.error = ODataV4Format({"code": code, "message": message})  # ARM's error body
    return exc


@pytest.mark.parametrize(
    ("status", "code", "message", "reason"),
    [
        (403, "LinkedAuthorizationFailed", LINKED, SOURCE_READ),
        (403, "AuthorizationFailed", "no import action", TARGET_AUTHORIZATION),
        (200, "InvalidParameters", f"{OP} denied: client is not allowed access", NETWORK),
    ],
    ids=["linked", "target", "network"],
)
def test_classify_carries_the_fallback_reason(
    status: int, code: str, message: str, reason: str
) -> None:
    error = classify(_arm_error(status, code, message), reference="dr/team/app:1", target="dr")
    assert isinstance(error, ImportUnavailableError)
    assert error.reason == reason
    assert error.status == status
    assert error.operation == "import"
    assert error.reference == "dr/team/app:1"
