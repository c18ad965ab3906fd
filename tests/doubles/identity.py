"""Identity doubles: the App Service managed identity endpoint and an Entra token endpoint.

``ManagedIdentityDouble`` speaks the protocol App Service and Functions give a function
(``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, api-version 2019-08-01: ``GET ?resource=&
api-version=[&client_id=]`` with header ``X-IDENTITY-HEADER``; answers ``access_token``,
``expires_on`` in epoch seconds, ``resource``, ``token_type``), so azure-identity's
``ManagedIdentityCredential`` runs unmodified.

``EntraDouble`` is ``POST /{tenant}/oauth2/v2.0/token`` over HTTPS (azure-identity insists
on TLS authorities) for ``client_credentials`` with a client secret or a client assertion.
A federated identity credential is ``(tenant, app client id) -> trusted principal``: the
assertion must be that principal's token for ``api://AzureADTokenExchange``. Errors carry
the AADSTS codes Entra uses (``AADSTS7002121`` wrong audience, ``AADSTS700211`` no
matching federated credential, ``AADSTS7000215`` bad secret).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import trustme

from tests.doubles import JsonServer, Principal, Served, TokenBook, split

EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
HOME = "tenant-home"  # the function's tenant
OTHER = "tenant-other"  # a source registry's tenant, reached by federation
FUNCTION_MI = Principal("oid-function-mi", HOME, "cid-function-mi")
USER_MI = Principal("oid-user-mi", HOME, "cid-user-mi")
FED_APP = Principal("oid-app-in-other", OTHER, "cid-multitenant-app")
MI_API_VERSION = "2019-08-01"


@dataclass
class ManagedIdentityDouble(Served):
    """The function's identity: system-assigned, plus user-assigned ones by client id."""

    book: TokenBook
    system: Principal
    user_assigned: dict[str, Principal] = field(default_factory=dict)
    header: str = "identity-header-for-tests"
    requests: list[dict[str, str]] = field(default_factory=list)
    server: JsonServer | None = None

    @property
    def env(self) -> dict[str, str]:
        assert self.server is not None
        return {"IDENTITY_ENDPOINT": f"{self.server.url}/msi/token", "IDENTITY_HEADER": self.header}

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        path, query = split(target)
        self.requests.append(query)
        if method != "GET" or path != "/msi/token":
            return 404, {}, {"error": "not_found"}
        if headers.get("x-identity-header") != self.header:
            return 401, {}, {"error": "invalid_request", "error_description": "bad header"}
        if query.get("api-version") != MI_API_VERSION or not query.get("resource"):
            return 400, {}, {"error": "invalid_request", "error_description": "api-version"}
        principal = self.system
        client_id = query.get("client_id")
        if client_id:
            if client_id not in self.user_assigned:
                return 400, {}, {"error": "invalid_request", "error_description": "no identity"}
            principal = self.user_assigned[client_id]
        resource = query["resource"]
        token = self.book.issue(principal, resource)
        expires = str(int(time.time()) + 3600)
        return (
            200,
            {},
            {
                "access_token": token,
                "expires_on": expires,
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal.client_id,
            },
        )


@dataclass(frozen=True)
class App:
    """A multi-tenant app's service principal in one tenant."""

    principal: Principal
    secret: str | None = None
    trusts: Principal | None = None  # the federated identity credential's subject


@dataclass
class EntraDouble(Served):
    book: TokenBook
    ca: trustme.CA
    apps: dict[tuple[str, str], App] = field(default_factory=dict)  # (tenant, client id)
    requests: list[dict[str, str]] = field(default_factory=list)
    server: JsonServer | None = None

    @property
    def authority(self) -> str:
        return self.url

    def add_app(self, app: App) -> None:
        self.apps[(app.principal.tenant_id, app.principal.client_id)] = app

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        path, _ = split(target)
        parts = path.strip("/").split("/")
        if method == "GET" and path.endswith("/v2.0/.well-known/openid-configuration"):
            return 200, {}, self._openid(parts[0])
        if method != "POST" or len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return 404, {}, {"error": "not_found"}
        form = dict(parse_qsl(body.decode()))
        self.requests.append({k: v for k, v in form.items() if k not in {"client_secret"}})
        app = self.apps.get((parts[0], form.get("client_id", "")))
        if app is None:
            return _aad(400, "unauthorized_client", "AADSTS700016: application not found")
        problem = self._authenticate(app, form)
        if problem:
            return _aad(401, "invalid_client", problem)
        scope = form.get("scope", "").split()[0] if form.get("scope") else ""
        token = self.book.issue(app.principal, scope)
        return 200, {}, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _openid(self, tenant: str) -> dict[str, str]:
        """What MSAL (behind ClientSecretCredential) reads before it asks for a token."""
        base = f"{self.authority}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        }

    def _authenticate(self, app: App, form: dict[str, str]) -> str | None:
        if "client_secret" in form:
            if app.secret is None or form["client_secret"] != app.secret:
                return "AADSTS7000215: Invalid client secret provided."
            return None
        found = self.book.lookup(form.get("client_assertion", ""))
        if found is None:
            return (
                "AADSTS700211: No matching federated identity record found for presented assertion."
            )
        principal, audience = found
        if audience != EXCHANGE_AUDIENCE:
            return f"AADSTS7002121: The assertion's audience {audience} is not accepted."
        if app.trusts is None or principal != app.trusts:
            return (
                "AADSTS700213: No matching federated identity record found for presented "
                "assertion subject."
            )
        return None


def _aad(status: int, error: str, description: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"error": error, "error_description": description, "error_codes": [0]}
