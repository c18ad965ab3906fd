"""``doctor``: every caveat checked before it bites, one ``Check`` per finding.

For the source and each target: the identity (and, across tenants, the federation), the
data plane (``/v2/`` answers, the token exchange works, pull on the source and push on
the target are allowed: tried, not assumed), and, where the registry has an ARM id, its
SKU, network and export settings and the import role, then the strategy each target gets.
The verdicts on ARM facts live in ``replicator.acr.verdicts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from replicator.acr import verdicts
from replicator.acr.arm import (
    RegistryId,
    RegistryProperties,
    allowed_actions,
    management_client,
    permits,
    registry_properties,
)
from replicator.acr.errors import IMPORT_ACTION
from replicator.errors import RegistryError
from replicator.identity import RegistryIdentity, credential_from, identity_of
from replicator.oci.auth import ACR_SCOPE
from replicator.strategy import choose_strategy

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from replicator.config import Settings
    from replicator.model import Target
    from replicator.oci.registries import Registries

PROBE_REPOSITORY = "acr-replicator/doctor"
Check = verdicts.Check


@dataclass(frozen=True)
class ArmFacts:
    properties: RegistryProperties | None = None
    can_import: bool | None = None  # None: not asked or could not tell
    error: str | None = None


def run_doctor(settings: Settings, registries: Registries, **arm_kwargs: Any) -> list[Check]:
    """All checks, source first; never raises for what it finds."""
    source_checks, source_facts = _registry(settings, registries, settings.source, None, arm_kwargs)
    checks = list(source_checks)
    for target in settings.targets:
        found, facts = _registry(settings, registries, target.login_server, target, arm_kwargs)
        checks += found
        choice = choose_strategy(settings, target)
        identity = identity_of(settings, settings.source)
        checks += verdicts.strategy(target, choice, source_facts.properties, facts, identity)
    return checks


def _registry(
    settings: Settings,
    registries: Registries,
    host: str,
    target: Target | None,
    arm_kwargs: dict[str, Any],
) -> tuple[list[Check], ArmFacts]:
    identity = identity_of(settings, host)
    credential = credential_from(settings.identity, identity)
    checks = [_identity(host, identity, credential)]
    checks += _data_plane(registries, host, identity, source=target is None)
    resource_id = settings.source_resource_id if target is None else target.resource_id
    facts = ArmFacts()
    if resource_id and credential is not None and checks[0].ok:
        facts = _arm(settings, credential, RegistryId.parse(resource_id), target, arm_kwargs)
        checks += verdicts.properties(host, facts.properties, facts.error, source=target is None)
    return checks, facts


def _identity(host: str, identity: RegistryIdentity, credential: TokenCredential | None) -> Check:
    name = "cross-tenant" if identity.cross_tenant else "identity"
    if credential is None:
        return Check(host, name, "pass", "no Azure identity: anonymous or registry challenge")
    try:
        credential.get_token(ACR_SCOPE)
    except ClientAuthenticationError as exc:
        return Check(host, name, "fail", _first_line(exc), verdicts.identity_fix(identity))
    what = f"{identity.mode} identity gets tokens"
    if identity.cross_tenant:
        what = f"{identity.mode} credential usable: tokens for tenant {identity.tenant_id}"
    return Check(host, name, "pass", what)


def _data_plane(
    registries: Registries, host: str, identity: RegistryIdentity, *, source: bool
) -> list[Check]:
    client = registries.client(host)
    try:
        answer = client.request("GET", "/v2/", retry=False)
        answer.close()
    except RegistryError as exc:
        if exc.operation not in {"token", "token exchange"}:
            return [Check(host, "reachable", "fail", _first_line(exc), verdicts.REACH_FIX)]
        fix = verdicts.identity_fix(identity)
        return [
            Check(host, "reachable", "pass", "/v2/ answers and asks for a token"),
            Check(host, "token", "fail", f"token exchange refused: {_first_line(exc)}", fix),
        ]
    checks = [Check(host, "reachable", "pass", f"/v2/ answers ({answer.status_code})")]
    if answer.status_code in {401, 403}:
        fix = verdicts.identity_fix(identity)
        return [*checks, Check(host, "token", "fail", "the registry refused the token", fix)]
    if identity.mode != "none" and client.auth.token_requests:
        checks.append(Check(host, "token", "pass", "token exchange and /v2/ with it work"))
    probe = _try_pull if source else _try_push
    return [*checks, probe(registries, host)]


def _try_pull(registries: Registries, host: str) -> Check:
    client = registries.client(host)
    try:
        response = client.request("GET", f"/v2/{PROBE_REPOSITORY}/tags/list", retry=False)
        response.close()
    except RegistryError as exc:
        return Check(host, "pull", "fail", _first_line(exc), verdicts.PULL_FIX)
    if response.status_code in {401, 403}:
        return Check(
            host, "pull", "fail", f"pull refused ({response.status_code})", verdicts.PULL_FIX
        )
    return Check(host, "pull", "pass", "pull allowed (tried a repository read)")


def _try_push(registries: Registries, host: str) -> Check:
    """Start a blob upload and cancel it: push is proven and nothing is left behind."""
    client = registries.client(host)
    path = f"/v2/{PROBE_REPOSITORY}/blobs/uploads/"
    try:
        response = client.request("POST", path, retry=False)
        response.close()
        location = response.headers.get("Location")
        if response.status_code == 202 and location:
            client.request("DELETE", location, scopes=(), retry=False).close()
    except RegistryError as exc:
        return Check(host, "push", "fail", _first_line(exc), verdicts.PUSH_FIX)
    if response.status_code != 202:
        detail = f"push refused ({response.status_code})"
        return Check(host, "push", "fail", detail, verdicts.PUSH_FIX)
    return Check(host, "push", "pass", "push allowed (started and cancelled an upload)")


def _arm(
    settings: Settings,
    credential: TokenCredential,
    rid: RegistryId,
    target: Target | None,
    arm_kwargs: dict[str, Any],
) -> ArmFacts:
    client = management_client(credential, settings.arm_endpoint, rid.subscription, **arm_kwargs)
    with client:
        try:
            properties = registry_properties(client, rid)
        except (HttpResponseError, AzureError) as exc:
            return ArmFacts(error=_first_line(exc))
        if target is None:
            return ArmFacts(properties)
        try:
            can_import = permits(allowed_actions(client, rid), IMPORT_ACTION)
        except (HttpResponseError, AzureError):
            return ArmFacts(properties)
    return ArmFacts(properties, can_import)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
