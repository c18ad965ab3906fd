"""What registry facts mean for replication: pass / warn / fail, and the fix. Pure.

Facts from the ACR docs (SKU table, import prerequisites): Basic has no anonymous pull,
private endpoints, network rules or geo-replication; import from a network-restricted
source needs the trusted-services bypass and the source named by resource id; import
across tenants goes by login server with credentials, and not over private endpoints; a
disabled export policy forbids import out of the registry; the target needs
``importImage/action``, and import by resource id needs ``read`` on the source too. What
each registry needs is the role table's (``replicator.adapters.acr.roles``), in the registry's
role-assignment mode as ARM reports it: on ABAC registries AcrPull/AcrPush/AcrDelete do
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from replicator.adapters.acr import roles
from replicator.adapters.acr.errors import IMPORT_ACTION, IMPORT_ROLE
from replicator.domain.identities import IdentityMode, RegistryIdentity
from replicator.domain.model import Strategy

if TYPE_CHECKING:
    from replicator.adapters.acr.arm import RegistryProperties, SystemTopic
    from replicator.adapters.acr.roles import Permission
    from replicator.domain.model import Target
    from replicator.domain.strategy import Choice

REACH_FIX = (
    "check DNS and the network path from the function to the registry: behind a private "
    "endpoint it needs VNet integration and the privatelink.azurecr.io private DNS zone"
)
PULL_FIX = "grant the identity AcrPull on the source registry"
PUSH_FIX = "grant the identity AcrPush on the target registry"


@dataclass(frozen=True)
class ArmFacts:
    """What ARM told doctor about one registry (``None``: not asked, or could not tell)."""

    properties: RegistryProperties | None = None
    permissions: tuple[Permission, ...] | None = None
    error: str | None = None

    def may(self, action: str) -> bool | None:
        if self.permissions is None:
            return None
        return roles.any_allows(self.permissions, action)

    @property
    def can_import(self) -> bool | None:
        return self.may(IMPORT_ACTION)


class CheckStatus(StrEnum):
    """A check's verdict: ``fail`` makes doctor exit 1, ``warn`` is worth a look."""

    PASS = "pass"  # noqa: S105 - a verdict
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    registry: str
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CheckStatus(self.status))  # a verdict given as text

    @property
    def ok(self) -> bool:
        return self.status is not CheckStatus.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "check": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix or None,
        }


def identity_fix(identity: RegistryIdentity) -> str:
    if identity.mode is IdentityMode.FEDERATED:
        return (
            f"in tenant {identity.tenant_id}: provision the multi-tenant app {identity.client_id}, "
            "add a federated identity credential on it (issuer "
            "https://login.microsoftonline.com/<function tenant>/v2.0, subject = the managed "
            "identity's object id, audience api://AzureADTokenExchange) and grant its service "
            "principal AcrPull on the registry"
        )
    if identity.mode is IdentityMode.SECRET:
        return f"check the client secret in {identity.secret_setting} (expired? rotated?)"
    if identity.mode is IdentityMode.MANAGED:
        return "enable the function's managed identity (AZURE_CLIENT_ID for a user-assigned one)"
    return "run `az login`, or set REPLICATOR_IDENTITY / REPLICATOR_IDENTITIES"


def properties(
    host: str, props: RegistryProperties | None, error: str | None, *, source: bool
) -> list[Check]:
    if props is None:
        fix = "grant the identity Reader on the registry (doctor reads its settings through ARM)"
        return [
            Check(
                host, "arm", CheckStatus.WARN, f"could not read the registry from ARM: {error}", fix
            )
        ]
    checks = [_identity_of_resource(host, props), _sku(host, props), _network(host, props)]
    if source:
        checks.append(_export(host, props))
    return checks


def _identity_of_resource(host: str, props: RegistryProperties) -> Check:
    if props.login_server.lower() == host.lower():
        return Check(
            host, "resource-id", CheckStatus.PASS, f"names {props.name} ({props.login_server})"
        )
    return Check(
        host,
        "resource-id",
        CheckStatus.FAIL,
        f"the resource id names {props.name}, whose login server is {props.login_server}",
        "set the resource id of this registry (az acr show -n <name> --query id)",
    )


def _sku(host: str, props: RegistryProperties) -> Check:
    if props.sku == "Basic":
        return Check(
            host,
            "sku",
            CheckStatus.WARN,
            "Basic: no anonymous pull, no private endpoints or network rules, no "
            "geo-replication, and the lowest throughput limits",
            "upgrade to Standard (anonymous pull) or Premium (private endpoints, "
            "geo-replication): az acr update --sku Premium",
        )
    return Check(host, "sku", CheckStatus.PASS, f"{props.sku}")


def _network(host: str, props: RegistryProperties) -> Check:
    shape = (
        f"public network access {props.public_network_access}, default action "
        f"{props.network_default_action}, {props.private_endpoints} private endpoint(s), "
        f"trusted services {'allowed' if props.trusted_services_bypass else 'not allowed'}"
    )
    if not props.network_restricted:
        return Check(host, "network", CheckStatus.PASS, shape)
    if props.trusted_services_bypass:
        return Check(
            host, "network", CheckStatus.PASS, f"{shape}: import works as a trusted service"
        )
    return Check(
        host,
        "network",
        CheckStatus.WARN,
        f"{shape}: ImportImage cannot reach it",
        "allow trusted services (az acr update --allow-trusted-services true), or let the "
        "targets use strategy copy from inside the network",
    )


def _export(host: str, props: RegistryProperties) -> Check:
    if props.export_enabled:
        return Check(host, "export-policy", CheckStatus.PASS, "export allowed")
    return Check(
        host,
        "export-policy",
        CheckStatus.WARN,
        "export policy disabled: import out of this registry is refused",
        "az acr config export-policy ... or use strategy copy",
    )


def strategy(
    target: Target,
    choice: Choice,
    source: RegistryProperties | None,
    facts: ArmFacts,
    source_identity: RegistryIdentity,
    refusal: str | None = None,
    planned: Choice | None = None,
) -> list[Check]:
    """Which path this target's images take and why: ``choice`` is the configured one,
    ``planned`` the one they will take given ``refusal`` (what would refuse an import)."""
    host = target.login_server
    if not choice.imports:
        return [Check(host, "strategy", CheckStatus.PASS, f"copy: {choice.reason}")]
    checks = [_import_role(target, facts)]
    blocker = refusal or import_blocker(source, source_identity)
    if blocker is None:
        checks.append(Check(host, "strategy", CheckStatus.PASS, f"import: {choice.reason}"))
    elif target.strategy is Strategy.AUTO:
        reason = planned.reason if planned else f"import would fail ({blocker})"
        detail = f"copy: {reason}"
        checks.append(
            Check(host, "strategy", CheckStatus.WARN, detail, "nothing to do, or fix the source")
        )
    else:
        fix = "set the target's strategy to auto or copy, or fix what refuses the import"
        checks.append(
            Check(host, "strategy", CheckStatus.FAIL, f"import cannot work: {blocker}", fix)
        )
    return checks


def import_blocker(source: RegistryProperties | None, identity: RegistryIdentity) -> str | None:
    if source is None:
        return None
    if not source.export_enabled:
        return "the source's export policy is disabled"
    if identity.cross_tenant and source.network_restricted:
        return "import across tenants does not work over private endpoints or network rules"
    if source.network_restricted and not source.trusted_services_bypass:
        return "the source is network-restricted without the trusted-services bypass"
    return None


def _import_role(target: Target, facts: ArmFacts) -> Check:
    host = target.login_server
    if facts.can_import is None:
        return Check(
            host, "import-role", CheckStatus.WARN, "could not read the identity's permissions"
        )
    if facts.can_import:
        return Check(host, "import-role", CheckStatus.PASS, f"{IMPORT_ACTION} allowed")
    return Check(
        host,
        "import-role",
        CheckStatus.FAIL,
        f"{IMPORT_ACTION} not granted: every import will be refused (AcrPush is not enough)",
        f"az role assignment create --assignee <identity principal id> --role '{IMPORT_ROLE}' "
        f"--scope {target.resource_id}",
    )


def event_grid_check(
    host: str, resource_id: str, topics: tuple[SystemTopic, ...] | None, error: str | None
) -> Check:
    """The source's Event Grid system topic (one per source, in any resource group)."""
    if topics is None:
        return Check(
            host,
            "event-grid",
            CheckStatus.WARN,
            f"could not list the Event Grid system topics ({error})",
            "grant Reader (Microsoft.EventGrid/systemTopics/read) on the subscription to check; "
            "the post-deploy hook needs it too, to reuse an existing topic",
        )
    found = [t for t in topics if t.source.lower() == resource_id.lower()]
    if found:
        topic = found[0]
        return Check(
            host,
            "event-grid",
            CheckStatus.PASS,
            f"system topic {topic.name} in {topic.resource_group}: the hook adds its "
            "subscription there",
        )
    return Check(
        host,
        "event-grid",
        CheckStatus.WARN,
        "no Event Grid system topic on the source: pushes reach DR only by reconcile",
        "azd hooks run postdeploy (creates the topic and the subscription)",
    )
