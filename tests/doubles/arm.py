"""An ARM double for container registries, over HTTPS, that really imports.

What it serves (shapes from the 2025-11-01 REST spec the SDK was generated from):
- ``GET .../registries/{name}``: ``sku``, ``properties.loginServer``,
  ``publicNetworkAccess``, ``networkRuleBypassOptions``, ``networkRuleSet.defaultAction``,
  ``anonymousPullEnabled``, ``privateEndpointConnections``, ``policies.exportPolicy``,
  ``policies.azureADAuthenticationAsArmPolicy.status`` (``enabled`` | ``disabled``, default
  ``enabled``: azure-rest-api-specs Microsoft.ContainerRegistry Registry.models.tsp,
  ``Policies`` / ``AzureADAuthenticationAsArmPolicy``, in the stable versions from
  2025-04-01 on, e.g. stable/2025-04-01/examples/RegistryList.json; the data-plane token
  double refuses an ARM-audience Entra token while it is ``disabled``),
  ``roleAssignmentMode`` (``LegacyRegistryPermissions`` | ``AbacRepositoryPermissions``);
- ``POST .../registries/{name}/importImage``: 202 with ``Location`` and
  ``Azure-AsyncOperation``; the operation polls ``InProgress`` ``polls`` times, then
  ``Succeeded`` or ``Failed`` with ARM's ``error`` body, and no ``Retry-After`` (so the
  client's ``polling_interval`` paces the polls). The import is real: manifests
  and blobs move between the local distribution registries behind the login servers,
  and (like ImportImage) referrers do not;
- ``GET {scope}/providers/Microsoft.Authorization/permissions``: the caller's actions
  from its role assignments on the registry;
- ``GET /subscriptions/{id}/providers/Microsoft.EventGrid/systemTopics``: the system
  topics registered with ``topics`` (``properties.source``, ``topicType``, ``identity``);
- ``GET .../registries/{name}/listUsages``: ``{"value": [{"name", "limit", "currentValue",
  "unit"}]}`` with ``Size`` in ``Bytes`` and ``Webhooks`` as a ``Count`` (Microsoft.
  ContainerRegistry ``RegistryUsage``; Registry/stable/2025-11-01/examples/
  RegistryListUsages.json); needs ``registries/listUsages/read``;
- ``GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}``: a
  Flex Consumption function app (``FakeSite``) in the published shape: ``kind``
  ``functionapp,linux``, ``properties.functionAppConfig`` with ``deployment``, ``runtime``
  and ``scaleAndConcurrency`` (``maximumInstanceCount``, ``instanceMemoryMB``, integers;
  ``alwaysReady``; ``triggers.http.perInstanceConcurrency``) as in azure-rest-api-specs
  specification/web/resource-manager/Microsoft.Web/AppService (``FunctionAppConfig``,
  ``FunctionsScaleAndConcurrency``; the response of examples/2025-03-01/
  CreateOrUpdateFunctionAppFlexConsumptionWithDetails.json); an app on another plan has no
  ``functionAppConfig``. Needs ``Microsoft.Web/sites/read`` on the site, its group or its
  subscription (ARM's inheritance), else 403 ``AuthorizationFailed``.

Authorization is decided from the role table only (``replicator/adapters/acr/roles.json``: the
built-in roles' published actions and data actions) and ``RoleAssignments``, as ARM
decides it:
- every request: a bearer token the identity doubles issued for this ARM's audience;
- ``GET`` a registry: ``registries/read`` on it, else 403 ``AuthorizationFailed``;
- ``importImage``: ``importImage/action`` on the target, else 403 ``AuthorizationFailed``;
  for a source named by resource id (same tenant) also ``read`` on the source, else 403
  ``LinkedAuthorizationFailed`` with ARM's text (Azure/acr#237: AcrPull alone is refused
  here); then, inside the operation, pull rights on the source in its role-assignment mode
  (``Unauthorized`` as ACR answers) and the source's network rules.
``fail_next`` scripts what a real service cannot be made to do on demand (429 throttling,
an internal failure).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trustme

from replicator.adapters.acr import roles
from replicator.adapters.acr.roles import ABAC_MODE, IMPORT_ACTION, REGISTRY_READ, Role
from replicator.domain.config import Settings, load_settings
from tests.doubles import JsonServer, Principal, RoleAssignments, Served, TokenBook, bearer, split
from tests.doubles.registry_copy import BackendAuth, copy_image

LEGACY_MODE = "LegacyRegistryPermissions"
TOPICS_READ = "Microsoft.EventGrid/systemTopics/read"
SITES_READ = "Microsoft.Web/sites/read"
USAGES_READ = "Microsoft.ContainerRegistry/registries/listUsages/read"


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
    role_assignment_mode: str = LEGACY_MODE
    arm_audience_policy: str = "enabled"  # policies.azureADAuthenticationAsArmPolicy.status
    # For a data plane behind a token service: ACR's own token for a scope (import's access)
    backend: Callable[[str], str] | None = None
    # Where the registry itself reaches its data plane when ``host`` (the login server the
    # worker is given) has no route from the worker: a private endpoint only ACR uses
    private_host: str | None = None
    size_bytes: int = 0  # listUsages "Size"

    def usages(self) -> dict[str, Any]:
        limit = {"Basic": 10, "Standard": 100, "Premium": 500}.get(self.sku, 100) * 1024**3
        return {
            "value": [
                {"name": "Size", "limit": limit, "currentValue": self.size_bytes, "unit": "Bytes"},
                {"name": "Webhooks", "limit": 10, "currentValue": 0, "unit": "Count"},
            ]
        }

    @property
    def abac(self) -> bool:
        return self.role_assignment_mode == ABAC_MODE

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
                    "exportPolicy": {"status": "enabled" if self.export_enabled else "disabled"},
                    "azureADAuthenticationAsArmPolicy": {"status": self.arm_audience_policy},
                },
                "roleAssignmentMode": self.role_assignment_mode,
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
class FakeSite:
    """A function app as ARM's ``GET Microsoft.Web/sites/{name}`` answers it."""

    name: str
    subscription: str = "00000000-0000-0000-0000-0000000000aa"
    resource_group: str = "rg-dr"
    maximum_instance_count: int = 40
    instance_memory_mb: int = 2048
    flex: bool = True  # False: a plan without functionAppConfig

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )

    def to_json(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "state": "Running",
            "enabled": True,
            "defaultHostName": f"{self.name}.azurewebsites.net",
            "httpsOnly": True,
            "resourceGroup": self.resource_group,
            "serverFarmId": (
                f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Web/serverfarms/plan-{self.name}"
            ),
        }
        if self.flex:
            properties["functionAppConfig"] = {
                "deployment": {
                    "storage": {
                        "type": "blobContainer",
                        "value": f"https://st{self.name}.blob.core.windows.net/app-package",
                        "authentication": {"type": "UserAssignedIdentity"},
                    }
                },
                "runtime": {"name": "python", "version": "3.11"},
                "scaleAndConcurrency": {
                    "alwaysReady": [],
                    "maximumInstanceCount": self.maximum_instance_count,
                    "instanceMemoryMB": self.instance_memory_mb,
                    "triggers": None,
                },
            }
        return {
            "id": self.resource_id,
            "name": self.name,
            "type": "Microsoft.Web/sites",
            "kind": "functionapp,linux" if self.flex else "functionapp",
            "location": "westeurope",
            "properties": properties,
        }


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
    assignments: RoleAssignments = field(default_factory=RoleAssignments)
    topics: list[dict[str, Any]] = field(default_factory=list)  # Event Grid system topics
    sites: dict[str, FakeSite] = field(default_factory=dict)  # function apps, by name
    polls: int = 1
    fail_next: list[str] = field(default_factory=list)  # "throttled" | "internal"
    import_bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    operations: dict[str, Operation] = field(default_factory=dict)
    server: JsonServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def roles(self) -> dict[tuple[str, str], set[str]]:
        """(object id, lower-case scope) -> role keys: the assignments, to edit in place."""
        return self.assignments.held

    def add(self, registry: FakeAcr) -> FakeAcr:
        self.registries[registry.name.lower()] = registry
        return registry

    def assign(self, principal: Principal, role: str, registry: FakeAcr) -> None:
        """Grant a built-in role (key, name or id of the role table) on a registry."""
        self.assignments.assign(principal, role, registry.resource_id)

    def grant(self, principal: Principal, granted: Iterable[Role], registry: FakeAcr) -> None:
        """Grant roles as infra/ does (``roles.grants(...)``)."""
        for role in granted:
            self.assign(principal, role.key, registry)

    def held(self, principal: Principal, registry: FakeAcr) -> tuple[Role, ...]:
        return self.assignments.roles_of(principal, registry.resource_id)

    def permissions(self, principal: Principal, registry: FakeAcr) -> list[dict[str, list[str]]]:
        """ARM's permissions answer: one entry per role, its published permission block."""
        return [
            {
                "actions": list(r.actions),
                "notActions": list(r.not_actions),
                "dataActions": list(r.data_actions),
                "notDataActions": list(r.not_data_actions),
            }
            for r in self.held(principal, registry)
        ]

    def allowed(self, principal: Principal, registry: FakeAcr, action: str) -> bool:
        return roles.any_allows(self.held(principal, registry), action)

    def may_pull(self, principal: Principal, registry: FakeAcr) -> bool:
        return roles.permits(self.held(principal, registry), "pull", abac=registry.abac)

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
        if method == "GET" and parts[2:] == ["providers", "Microsoft.EventGrid", "systemTopics"]:
            return self._topics(principal, parts[1])
        if len(parts) == 8 and parts[5:7] == ["Microsoft.Web", "sites"] and method == "GET":
            return self._site(principal, parts)
        registry = self._registry(parts)
        if registry is None:
            return _error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        tail = parts[8:]
        if method == "GET" and not tail:
            if not self.allowed(principal, registry, REGISTRY_READ):
                return _unauthorized(principal, REGISTRY_READ, registry.resource_id)
            return 200, {}, registry.to_json()
        if method == "GET" and tail == ["providers", "Microsoft.Authorization", "permissions"]:
            return 200, {}, {"value": self.permissions(principal, registry)}
        if method == "GET" and tail == ["listUsages"]:
            if not self.allowed(principal, registry, USAGES_READ):
                return _unauthorized(principal, USAGES_READ, registry.resource_id)
            return 200, {}, registry.usages()
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
            return _unauthorized(principal, IMPORT_ACTION, target.resource_id)
        linked = self._by_id((body.get("source") or {}).get("resourceId") or "")
        if linked is not None and not self.allowed(principal, linked, REGISTRY_READ):
            return _error(
                403,
                "LinkedAuthorizationFailed",
                f"The client '{principal.client_id}' with object id '{principal.object_id}' has "
                f"permission to perform action '{IMPORT_ACTION}' on scope '{target.resource_id}';"
                " however, it does not have permission to perform action 'read' on the linked "
                f"scope(s) '{linked.resource_id}' or the linked scope(s) are invalid.",
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
            minters = {
                r.private_host or r.host: r.backend for r in self.registries.values() if r.backend
            }
            auth = BackendAuth(minters) if minters else None
            copy_image(
                src,
                target.private_host or target.host,
                image,
                body.get("targetTags") or [],
                body,
                auth=auth,
            )
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
            registry = self._by_id(source["resourceId"])
            if registry is None:
                return None, "Source registry resource not found"
            if registry.restricted and registry.bypass != "AzureServices":
                return (
                    None,
                    f"denied: client with IP '10.0.0.1' is not allowed access ({registry.name})",
                )
            if not self.may_pull(principal, registry):
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
        if found is None or not self.may_pull(found[0], registry):
            return None, unauthorised
        return registry.host, None

    def _by_id(self, resource_id: str) -> FakeAcr | None:
        wanted = resource_id.lower()
        return next((r for r in self.registries.values() if r.resource_id.lower() == wanted), None)

    def _topics(self, principal: Principal, subscription: str) -> tuple[int, dict[str, str], Any]:
        """List Event Grid system topics of a subscription: needs ``systemTopics/read``
        there (held on the subscription scope, or Reader's ``*/read``)."""
        scope = f"/subscriptions/{subscription}"
        if not roles.any_allows(self.assignments.roles_of(principal, scope), TOPICS_READ):
            return _unauthorized(principal, TOPICS_READ, scope)
        listed = [t for t in self.topics if t["id"].lower().startswith(scope.lower() + "/")]
        return 200, {}, {"value": listed}

    def add_site(self, site: FakeSite) -> FakeSite:
        self.sites[site.name.lower()] = site
        return site

    def _site(self, principal: Principal, parts: list[str]) -> tuple[int, dict[str, str], Any]:
        site = self.sites.get(parts[7].lower())
        path = "/" + "/".join(parts)
        if (
            site is None
            or site.subscription != parts[1]
            or site.resource_group.lower() != parts[3].lower()
        ):
            return _error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")
        scopes = (
            site.resource_id,
            f"/subscriptions/{site.subscription}/resourceGroups/{site.resource_group}",
            f"/subscriptions/{site.subscription}",
        )
        if not any(
            roles.any_allows(self.assignments.roles_of(principal, s), SITES_READ) for s in scopes
        ):
            return _unauthorized(principal, SITES_READ, site.resource_id)
        return 200, {}, site.to_json()

    def add_topic(self, name: str, source: FakeAcr, resource_group: str = "rg-events") -> None:
        self.topics.append(
            {
                "id": (
                    f"/subscriptions/{source.subscription}/resourceGroups/{resource_group}"
                    f"/providers/Microsoft.EventGrid/systemTopics/{name}"
                ),
                "name": name,
                "type": "Microsoft.EventGrid/systemTopics",
                "location": "westeurope",
                "properties": {
                    "source": source.resource_id,
                    "topicType": "Microsoft.ContainerRegistry.Registries",
                    "provisioningState": "Succeeded",
                },
            }
        )


def _unauthorized(principal: Principal, action: str, scope: str) -> tuple[int, dict[str, str], Any]:
    return _error(
        403,
        "AuthorizationFailed",
        f"The client '{principal.client_id}' with object id '{principal.object_id}' does not "
        f"have authorization to perform action '{action}' over scope '{scope}' or the scope "
        "is invalid.",
    )


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

    def settings(self, strategy: str = "import", **extra: str) -> Settings:
        """The worker's settings for ``env``; ``IDENTITY_ENDPOINT`` makes the credential
        the managed identity (whose double's real endpoint is in ``os.environ``)."""
        return load_settings({**self.env(strategy, **extra), "IDENTITY_ENDPOINT": "set"})

    def target_digest(self, reference: str) -> str | None:
        url = f"http://{self.target.host}/v2/{self.repository}/manifests/{reference}"
        response = httpx.head(url, headers={"Accept": MANIFEST_ACCEPT})
        return (
            response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
        )
