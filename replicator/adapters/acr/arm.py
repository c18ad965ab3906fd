"""ARM for registries: the management client, registry properties, the caller's
permissions, and the Event Grid system topics of a subscription.

``REPLICATOR_ARM_ENDPOINT`` is the client's ``base_url`` and the token audience
(``<endpoint>/.default``), so sovereign clouds and the test double work the same way.
TLS is the SDK's own: the transport trusts the system store, or ``REQUESTS_CA_BUNDLE``.
Permissions are matched as ARM matches them by ``replicator.adapters.acr.roles``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from replicator.adapters.acr.roles import ABAC_MODE, Permission
from replicator.domain.errors import InvalidReferenceError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

PERMISSIONS_API = "2022-04-01"
EVENTGRID_API = "2022-06-15"
MAX_TOPIC_PAGES = 20  # system topics of one subscription: a handful of pages at most
MAX_ARM_BYTES = 4 * 1024 * 1024  # one ARM document, page or error: a few KiB to a few 100 KiB
_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ContainerRegistry/registries/(?P<name>[A-Za-z0-9]{5,50})$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RegistryId:
    subscription: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, resource_id: str) -> RegistryId:
        match = _RESOURCE_ID.match(resource_id or "")
        if not match:
            raise InvalidReferenceError(f"not an ARM registry id: {resource_id!r}")
        return cls(match["sub"], match["rg"], match["name"])

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )


@dataclass(frozen=True)
class RegistryProperties:
    """What ``GET .../registries/{name}`` says, as far as replication cares."""

    name: str
    login_server: str
    sku: str
    public_network_access: str = "Enabled"
    network_default_action: str = "Allow"
    trusted_services_bypass: bool = True
    anonymous_pull: bool = False
    private_endpoints: int = 0
    export_enabled: bool = True
    role_assignment_mode: str = "LegacyRegistryPermissions"
    # policies.azureADAuthenticationAsArmPolicy.status (enabled | disabled, enabled when
    # absent): whether the registry's token exchange takes an ARM-audience Entra token.
    arm_audience_accepted: bool = True

    @property
    def abac(self) -> bool:
        """RBAC Registry + ABAC Repository Permissions: AcrPull/AcrPush/AcrDelete do nothing."""
        return self.role_assignment_mode.lower() == ABAC_MODE.lower()

    @property
    def network_restricted(self) -> bool:
        return (
            self.public_network_access == "Disabled"
            or self.network_default_action == "Deny"
            or self.private_endpoints > 0
        )


def management_client(
    credential: TokenCredential, arm_endpoint: str, subscription: str, **kwargs: Any
) -> ContainerRegistryManagementClient:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(
        credential,
        subscription,
        base_url=arm_endpoint,
        credential_scopes=[f"{arm_endpoint.rstrip('/')}/.default"],
        **kwargs,
    )


def registry_properties(
    client: ContainerRegistryManagementClient, rid: RegistryId
) -> RegistryProperties:
    registry = client.registries.get(rid.resource_group, rid.name)
    rules = registry.network_rule_set
    export = registry.policies.export_policy if registry.policies else None
    as_arm = registry.policies.azure_ad_authentication_as_arm_policy if registry.policies else None
    return RegistryProperties(
        name=rid.name,
        login_server=_text(registry.login_server, ""),
        sku=_text(registry.sku.name if registry.sku else None, "Unknown"),
        public_network_access=_text(registry.public_network_access, "Enabled"),
        network_default_action=_text(rules.default_action if rules else None, "Allow"),
        trusted_services_bypass=_text(registry.network_rule_bypass_options, "AzureServices")
        == "AzureServices",
        anonymous_pull=bool(registry.anonymous_pull_enabled),
        private_endpoints=len(registry.private_endpoint_connections or []),
        export_enabled=_text(export.status if export else None, "enabled").lower() == "enabled",
        role_assignment_mode=_text(
            getattr(registry, "role_assignment_mode", None), "LegacyRegistryPermissions"
        ),
        arm_audience_accepted=_text(as_arm.status if as_arm else None, "enabled").lower()
        == "enabled",
    )


def _text(value: object, default: str) -> str:
    """The SDK's enums (``SkuName.PREMIUM``) and plain strings alike, as the wire value."""
    if value is None:
        return default
    return str(getattr(value, "value", value))


def caller_permissions(
    client: ContainerRegistryManagementClient, rid: RegistryId
) -> tuple[Permission, ...]:
    """The caller's permissions on the registry (``Microsoft.Authorization/permissions``):
    one entry per role assignment, as its role definition grants it."""
    body = arm_get_json(
        client, f"{rid}/providers/Microsoft.Authorization/permissions?api-version={PERMISSIONS_API}"
    )
    value = body.get("value", []) if isinstance(body, dict) else []
    return tuple(Permission.of(item) for item in value if isinstance(item, dict))


def arm_get_json(
    client: ContainerRegistryManagementClient, url: str, *, limit: int = MAX_ARM_BYTES
) -> Any:
    """``GET url`` on ARM, its JSON body read at most ``limit`` bytes (an answer or an
    error body over it is refused, never read whole). A refusal raises
    ``HttpResponseError`` with its status and ARM's ``(code) message`` from the body."""
    response = client.send_request(HttpRequest("GET", url), stream=True)
    try:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise HttpResponseError(
                    message=f"ARM's answer to GET {url.split('?', 1)[0]} is over {limit} bytes",
                    response=response,
                )
    finally:
        response.close()
    try:
        loaded = json.loads(body) if body else None
    except ValueError:
        loaded = None
    if response.status_code >= 400:
        error = loaded.get("error") if isinstance(loaded, dict) else None
        message = None
        if isinstance(error, dict):
            message = f"({error.get('code', '')}) {error.get('message', '')}"
        raise HttpResponseError(message=message, response=response)
    if loaded is None:
        raise HttpResponseError(message=f"ARM's answer to GET {url} is not JSON", response=response)
    return loaded


@dataclass(frozen=True)
class SystemTopic:
    id: str
    name: str
    source: str

    @property
    def resource_group(self) -> str:
        parts = self.id.split("/")
        return parts[4] if len(parts) > 4 else ""


def system_topics(
    client: ContainerRegistryManagementClient, subscription: str, arm_endpoint: str
) -> tuple[SystemTopic, ...]:
    """The Event Grid system topics of a subscription (``systemTopics/read`` there). A
    ``nextLink`` is followed only on ARM's own endpoint (the token goes nowhere else)."""
    url = (
        f"/subscriptions/{subscription}/providers/Microsoft.EventGrid/systemTopics"
        f"?api-version={EVENTGRID_API}"
    )
    found: list[SystemTopic] = []
    for _ in range(MAX_TOPIC_PAGES):
        body = arm_get_json(client, url)
        if not isinstance(body, dict):
            break
        for item in body.get("value", []):
            if isinstance(item, dict):
                props = item.get("properties") or {}
                found.append(
                    SystemTopic(
                        str(item.get("id", "")),
                        str(item.get("name", "")),
                        str(props.get("source", "")),
                    )
                )
        url = str(body.get("nextLink") or "")
        if not url.startswith(arm_endpoint.rstrip("/") + "/"):
            break
    return tuple(found)
