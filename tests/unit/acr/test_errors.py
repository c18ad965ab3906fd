from __future__ import annotations

import pytest

from replicator.acr.errors import ImportUnavailableError, error_kind
from replicator.errors import (
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
        PermanentRegistryError,
        "Data Importer and Data Reader",
    ),
    (
        "linked-forbidden",
        403,
        "LinkedAuthorizationFailed",
        "source scope",
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
    found, message = error_kind(status, code, f"{code} {text}")
    assert found is kind
    assert fragment in message
