"""An ARM double for container registries, over HTTPS, that really imports.

What it serves (shapes from the 2025-11-01 REST spec the SDK was generated from):
- ``GET .../registries/{name}``: ``sku``, ``properties.loginServer``,
  ``publicNetworkAccess``, ``networkRuleBypassOptions``, ``networkRuleSet.defaultAction``,
  ``anonymousPullEnabled``, ``privateEndpointConnections``, ``policies.exportPolicy``;
- ``POST .../registries/{name}/importImage``: 202 with ``Location`` and
  ``Azure-AsyncOperation``; the operation polls ``InProgress`` ``polls`` times, then
  ``Succeeded`` or ``Failed`` with ARM's ``error`` body, and no ``Retry-After`` (so the
  client's ``polling_interval`` paces the polls). The import is real: manifests
  and blobs move between the local distribution registries behind the login servers,
  and (like ImportImage) referrers do not;
- ``GET {scope}/providers/Microsoft.Authorization/permissions``: the caller's actions
  from its role assignments on the registry.

ARM checks what it checks in Azure: the bearer token (issued by the identity doubles for
this ARM's audience), ``importImage/action`` on the target (403 ``AuthorizationFailed``),
pull rights on the source, and the source's network rules. ``fail_next`` scripts what a
real service cannot be made to do on demand (429 throttling, an internal failure).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import trustme

from doubles import JsonServer, Principal, Served, TokenBook, bearer, split
from doubles.registry_copy import copy_image

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
READ_ACTION = "Microsoft.ContainerRegistry/registries/read"
PULL_DATA = "Microsoft.ContainerRegistry/registries/repositories/content/read"
ROLES: dict[str, dict[str, list[str]]] = {
    "AcrPull": {"actions": [], "dataActions": [PULL_DATA]},
    "AcrPush": {"actions": [], "dataActions": [PULL_DATA, PULL_DATA.replace("read", "write")]},
    "Container Registry Data Importer and Data Reader": {
        "actions": [IMPORT_ACTION, READ_ACTION],
        "dataActions": [PULL_DATA],
    },
    "Reader": {"actions": ["*/read"], "dataActions": []},
    "Contributor": {"actions": ["*"], "dataActions": []},
}


@dataclass
class FakeAcr:
    """One registry as ARM knows it; ``host`` is the local registry serving its data plane."""

    name: str
    host: str
    subscription: str = "00000000-0000-0000-0000-0000000000aa"
    resource_group: str = "rg-dr"
    sku: str = "Premium"
    public_network_access: str = "Enabled"
    network_default_action: str = "Allow"
    bypass: str = "AzureServices"
    anonymous_pull: bool = False
    private_endpoints: int = 0
    export_enabled: bool = True
    tenant: str = "tenant-home"

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )

    def to_json(self) -> dict[str, Any]:
        pecs = [
            {
                "id": f"{self.resource_id}/privateEndpointConnections/pe{i}",
                "properties": {"privateLinkServiceConnectionState": {"status": "Approved"}},
            }
            for i in range(self.private_endpoints)
        ]
        return {
            "id": self.resource_id,
            "name": self.name,
            "type": "Microsoft.ContainerRegistry/registries",
            "location": "westeurope",
            "sku": {"name": self.sku, "tier": self.sku},
            "properties": {
                "loginServer": self.host,
                "provisioningState": "Succeeded",
                "adminUserEnabled": False,
                "publicNetworkAccess": self.public_network_access,
                "networkRuleBypassOptions": self.bypass,
                "networkRuleSet": {"defaultAction": self.network_default_action, "ipRules": []},
                "anonymousPullEnabled": self.anonymous_pull,
                "privateEndpointConnections": pecs,
                "policies": {
                    "exportPolicy": {"status": "enabled" if self.export_enabled else "disabled"}
                },
            },
        }

    @property
    def restricted(self) -> bool:
        return (
            self.public_network_access == "Disabled"
            or self.network_default_action == "Deny"
            or self.private_endpoints > 0
        )


@dataclass
class Operation:
    status: str
    polls_left: int
    error: dict[str, str] | None = None


@dataclass
class ArmDouble(Served):
    book: TokenBook
    ca: trustme.CA
    registries: dict[str, FakeAcr] = field(default_factory=dict)
    roles: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (oid, scope) -> roles
    polls: int = 1
    fail_next: list[str] = field(default_factory=list)  # "throttled" | "internal"
    import_bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    operations: dict[str, Operation] = field(default_factory=dict)
    server: JsonServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, registry: FakeAcr) -> FakeAcr:
        self.registries[registry.name.lower()] = registry
        return registry

    def assign(self, principal: Principal, role: str, registry: FakeAcr) -> None:
        self.roles.setdefault((principal.object_id, registry.resource_id.lower()), set()).add(role)

    def permissions(self, principal: Principal, registry: FakeAcr) -> list[dict[str, list[str]]]:
        names = self.roles.get((principal.object_id, registry.resource_id.lower()), set())
        return [{**ROLES[name], "notActions": [], "notDataActions": []} for name in sorted(names)]

    def allowed(self, principal: Principal, registry: FakeAcr, action: str) -> bool:
        import fnmatch

        for permission in self.permissions(principal, registry):
            for pattern in permission["actions"] + permission["dataActions"]:
                if fnmatch.fnmatch(action.lower(), pattern.lower()):
                    return True
        return False

    # -- HTTP -------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        path, query = split(target)
        self.requests.append((method, target))
        if path.startswith("/operations/"):
            return self._poll(path)
        if not query.get("api-version"):
            return _error(
                400, "MissingApiVersionParameter", "The api-version query parameter is required."
            )
        found = self.book.lookup(bearer(headers) or "")
        if found is None or found[1] != self.url:
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        principal = found[0]
        parts = path.strip("/").split("/")
        registry = self._registry(parts)
        if registry is None:
            return _error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        tail = parts[8:]
        if method == "GET" and not tail:
            if not self.allowed(principal, registry, READ_ACTION):
                return _error(
                    403,
                    "AuthorizationFailed",
                    f"The client '{principal.client_id}' with object id '{principal.object_id}' "
                    f"does not have authorization to perform action '{READ_ACTION}' over scope "
                    f"'{registry.resource_id}' or the scope is invalid.",
                )
            return 200, {}, registry.to_json()
        if method == "GET" and tail == ["providers", "Microsoft.Authorization", "permissions"]:
            return 200, {}, {"value": self.permissions(principal, registry)}
        if method == "POST" and tail == ["importImage"]:
            return self._import(principal, registry, json.loads(body or b"{}"))
        return _error(404, "NotFound", f"no route {method} {path}")

    def _registry(self, parts: list[str]) -> FakeAcr | None:
        if len(parts) < 8 or parts[0] != "subscriptions" or parts[6].lower() != "registries":
            return None
        registry = self.registries.get(parts[7].lower())
        if registry is None or registry.subscription != parts[1]:
            return None
        return registry

    def _poll(self, path: str) -> tuple[int, dict[str, str], Any]:
        op_id = path.split("/")[2]
        with self._lock:
            op = self.operations.get(op_id)
            if op is None:
                return _error(404, "NotFound", "no such operation")
            if op.polls_left > 0:
                op.polls_left -= 1
                status, error = "InProgress", None
            else:
                status, error = op.status, op.error
        if path.endswith("/result"):  # the Location URL: 202 while running, then 200
            return (202, {}, None) if status == "InProgress" else (200, {}, None)
        payload: dict[str, Any] = {"name": op_id, "status": status}
        if error:
            payload["error"] = error
        return 200, {}, payload

    def _import(
        self, principal: Principal, target: FakeAcr, body: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        self.import_bodies.append(body)
        if self.fail_next and self.fail_next[0] == "throttled":
            self.fail_next.pop(0)
            return (
                429,
                {"Retry-After": "7"},
                {
                    "error": {
                        "code": "TooManyRequests",
                        "message": "The request is being throttled.",
                    }
                },
            )
        if not self.allowed(principal, target, IMPORT_ACTION):
            return _error(
                403,
                "AuthorizationFailed",
                f"The client '{principal.client_id}' with object id '{principal.object_id}' "
                f"does not have authorization to perform action '{IMPORT_ACTION}' over scope "
                f"'{target.resource_id}' or the scope is invalid.",
            )
        error = self._run_import(principal, target, body)
        op_id = f"registries-{uuid.uuid4()}"
        with self._lock:
            self.operations[op_id] = Operation(
                "Failed" if error else "Succeeded", self.polls, error
            )
        base = f"{self.url}/operations/{op_id}"
        return (
            202,
            {
                "Location": f"{base}/result?api-version=2025-11-01",
                "Azure-AsyncOperation": f"{base}?api-version=2025-11-01",
            },
            None,
        )

    def _run_import(
        self, principal: Principal, target: FakeAcr, body: dict[str, Any]
    ) -> dict[str, str] | None:
        op_text = f"Operation registries-{uuid.uuid4()} failed. Resource {target.resource_id}"
        if self.fail_next and self.fail_next[0] == "internal":
            self.fail_next.pop(0)
            return {"code": "InternalServerError", "message": f"{op_text} Internal error"}
        source = body.get("source", {})
        src, denied = self._source(principal, source)
        if denied:
            return {"code": "InvalidParameters", "message": f"{op_text} {denied}"}
        assert src is not None
        image = source.get("sourceImage", "")
        try:
            copy_image(src, target.host, image, body.get("targetTags") or [], body)
        except LookupError:
            return {
                "code": "InvalidParameters",
                "message": f"{op_text} Unable to find manifest digest Repo: {src}/{image}",
            }
        return None

    def _source(
        self, principal: Principal, source: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        unauthorised = (
            'Unauthorized {"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        )
        if source.get("resourceId"):
            registry = next(
                (
                    r
                    for r in self.registries.values()
                    if r.resource_id.lower() == source["resourceId"].lower()
                ),
                None,
            )
            if registry is None:
                return None, "Source registry resource not found"
            if registry.restricted and registry.bypass != "AzureServices":
                return (
                    None,
                    f"denied: client with IP '10.0.0.1' is not allowed access ({registry.name})",
                )
            if not self.allowed(principal, registry, PULL_DATA):
                return None, unauthorised
            return registry.host, None
        uri = source.get("registryUri", "")
        registry = next((r for r in self.registries.values() if r.host == uri), None)
        if registry is None:
            return uri, None  # an outside registry: pulled anonymously
        if registry.restricted:
            return None, (
                f"denied: client with IP '20.50.2.1' is not allowed access; {uri} has public "
                "network access disabled or a private endpoint"
            )
        password = (source.get("credentials") or {}).get("password", "")
        found = self.book.lookup(password)
        if registry.anonymous_pull and not password:
            return registry.host, None
        if found is None or not self.allowed(found[0], registry, PULL_DATA):
            return None, unauthorised
        return registry.host, None


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"error": {"code": code, "message": message}}


MANIFEST_ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
)


@dataclass
class ArmPair:
    """A source and a target ACR known to the ARM double, each served by a local registry."""

    arm: ArmDouble
    source: FakeAcr
    target: FakeAcr
    repository: str = "team/app"

    def env(self, strategy: str = "import", **extra: str) -> dict[str, str]:
        target = {
            "login_server": self.target.host,
            "resource_id": self.target.resource_id,
            "strategy": strategy,
        }
        return {
            "REPLICATOR_SOURCE": self.source.host,
            "REPLICATOR_SOURCE_RESOURCE_ID": self.source.resource_id,
            "REPLICATOR_TARGETS": json.dumps([target]),
            "REPLICATOR_ARM_ENDPOINT": self.arm.url,
            **extra,
        }

    def target_digest(self, reference: str) -> str | None:
        url = f"http://{self.target.host}/v2/{self.repository}/manifests/{reference}"
        response = httpx.head(url, headers={"Accept": MANIFEST_ACCEPT})
        return (
            response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
        )
