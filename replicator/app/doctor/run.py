"""``doctor``: every caveat checked before it bites, one ``Check`` per finding.

For the source and each target: the identity (and, across tenants, the federation), the
data plane (``/v2/`` answers, the token exchange works, pull on the source and push on
the target are allowed: tried, not assumed), the Entra audience of the exchange (the
worker's: ``REPLICATOR_ACR_AUDIENCE``, else the login server's cloud's) and whether the
registry takes it (an ARM audience only while ``azureADAuthenticationAsArmPolicy`` is
enabled), and, where the registry has an ARM id, its
SKU, network and export settings, its role-assignment mode and the roles that mode needs
(the role table's, checked against the caller's permissions from ARM's permissions API),
the source side of import (read and pull on the source), the source's Event Grid system
topic, and per target the path its images take (import or copy) and why. The verdicts on
ARM facts live in ``replicator.app.doctor.verdicts``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from replicator.adapters.acr import roles
from replicator.adapters.acr.arm import (
    RegistryId,
    RegistryProperties,
    SystemTopic,
    caller_permissions,
    management_client,
    registry_properties,
    system_topics,
)
from replicator.adapters.azure.credentials import credential_from, registry_audience
from replicator.adapters.oci.credentials import acr_audience
from replicator.app.delivery import foreseen_refusal
from replicator.app.doctor import audience_checks, role_checks, verdicts
from replicator.app.doctor.budget_checks import PlanOptions, budget_checks, plan_checks
from replicator.app.doctor.verdicts import CheckStatus
from replicator.domain.errors import RegistryError
from replicator.domain.identities import IdentityMode, RegistryIdentity, identity_of
from replicator.domain.model import Strategy
from replicator.domain.strategy import choose_strategy, planned_path

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from replicator.adapters.oci.registries import Registries
    from replicator.domain.config import Settings
    from replicator.domain.model import Target

PROBE_REPOSITORY = "acr-replicator/doctor"
Check = verdicts.Check
ArmFacts = verdicts.ArmFacts
Need = role_checks.Need


def run_doctor(
    settings: Settings,
    registries: Registries,
    plan: PlanOptions | None = None,
    **arm_kwargs: Any,
) -> list[Check]:
    """All checks, source first; never raises for what it finds. ``plan``: the app and
    the backfill ETA for the budget plan (issue 17)."""
    source_checks, source_facts = _registry(settings, registries, settings.source, None, arm_kwargs)
    checks = list(source_checks)
    if source_facts.error != "not asked":
        checks += _source_side(settings, source_facts, arm_kwargs)
    skus = {settings.source: _sku(source_facts)}
    for target in settings.targets:
        found, facts = _registry(settings, registries, target.login_server, target, arm_kwargs)
        checks += found
        if facts.error != "not asked":
            checks.append(_target_roles(settings, target, facts))
        checks += _path(settings, target, source_facts, facts)
        skus[target.login_server] = _sku(facts)
    checks += budget_checks(settings, skus)  # the request budget plan (issue 17)
    return checks + plan_checks(settings, registries, plan or PlanOptions(), arm_kwargs)


def _sku(facts: ArmFacts) -> str | None:
    return facts.properties.sku if facts.properties is not None else None


def _imports_by_id(settings: Settings) -> bool:
    """Whether ARM will check read on the source: some target imports and the source is
    named by resource id in the same tenant (across tenants ARM pulls with the token)."""
    same_tenant = not identity_of(settings, settings.source).cross_tenant
    return (
        bool(settings.source_resource_id)
        and same_tenant
        and any(choose_strategy(settings, t).imports for t in settings.targets)
    )


def _source_side(settings: Settings, facts: ArmFacts, arm_kwargs: dict[str, Any]) -> list[Check]:
    host = settings.source
    strategies = [t.strategy.value for t in settings.targets]
    cross_tenant = identity_of(settings, host).cross_tenant
    abac = bool(facts.properties and facts.properties.abac)
    granted = (
        roles.source_owner_grants(abac=abac)
        if cross_tenant
        else roles.source_grants(strategies, abac=abac)
    )
    import_only = any(t.strategy is Strategy.IMPORT for t in settings.targets)
    needs = [Need("pull", "always", CheckStatus.FAIL), Need("catalog", "always", CheckStatus.FAIL)]
    checks = []
    if _imports_by_id(settings):
        needs.append(Need("read", "import", CheckStatus.FAIL if import_only else CheckStatus.WARN))
        checks.append(role_checks.source_import_check(host, facts, fails=import_only))
    role = role_checks.role_check(
        host, settings.source_resource_id, facts, granted, needs, side="source"
    )
    checks.insert(0, role)
    if settings.source_resource_id and not cross_tenant:
        checks.append(_event_grid(settings, arm_kwargs))
    return checks


def _target_roles(settings: Settings, target: Target, facts: ArmFacts) -> Check:
    abac = bool(facts.properties and facts.properties.abac)
    policy = str(settings.delete_policy)
    granted = roles.target_grants(strategy=target.strategy.value, delete_policy=policy, abac=abac)
    paths = roles.strategy_paths(target.strategy.value)
    alone = len(paths) == 1  # import or copy: no fallback
    needs = [Need("pull", "always", CheckStatus.FAIL)]
    if "import" in paths:
        needs.append(Need("import", "import", CheckStatus.FAIL if alone else CheckStatus.WARN))
    if "copy" in paths:
        needs.append(Need("push", "copy", CheckStatus.FAIL if alone else CheckStatus.WARN))
    if settings.delete_policy.deletes:
        needs.append(Need("delete", "delete", CheckStatus.FAIL))
    return role_checks.role_check(
        target.login_server, target.resource_id, facts, granted, needs, side="target"
    )


def _path(settings: Settings, target: Target, source: ArmFacts, facts: ArmFacts) -> list[Check]:
    """Which path this target's images take, and why."""
    choice = choose_strategy(settings, target)
    identity = identity_of(settings, settings.source)
    refusal = foreseen_refusal(
        settings,
        target,
        can_import=facts.can_import,
        can_read_source=source.may(roles.REGISTRY_READ),
    )
    because = refusal.detail if refusal else verdicts.import_blocker(source.properties, identity)
    planned = planned_path(settings, target, because)
    return verdicts.strategy(target, choice, source.properties, facts, identity, because, planned)


def _event_grid(settings: Settings, arm_kwargs: dict[str, Any]) -> Check:
    host = settings.source
    assert settings.source_resource_id is not None
    rid = RegistryId.parse(settings.source_resource_id)
    credential = credential_from(settings.identity, identity_of(settings, host))
    topics: tuple[SystemTopic, ...] | None = None
    error = None
    if credential is None:
        error = "no Azure identity"
    else:
        client = management_client(
            credential, settings.arm_endpoint, rid.subscription, **arm_kwargs
        )
        with client:
            try:
                topics = system_topics(client, rid.subscription, settings.arm_endpoint)
            except (HttpResponseError, AzureError) as exc:
                error = _first_line(exc)
    return verdicts.event_grid_check(host, str(rid), topics, error)


def _registry(
    settings: Settings,
    registries: Registries,
    host: str,
    target: Target | None,
    arm_kwargs: dict[str, Any],
) -> tuple[list[Check], ArmFacts]:
    identity = identity_of(settings, host)
    credential = credential_from(settings.identity, identity)
    audience = registry_audience(settings, host)  # what the worker's exchange asks for
    checks = [_identity(host, identity, credential, audience)]
    checks += _data_plane(registries, host, identity, source=target is None)
    resource_id = settings.source_resource_id if target is None else target.resource_id
    facts = ArmFacts(error="not asked")
    if resource_id and credential is not None and checks[0].ok:
        facts = _arm(settings, credential, RegistryId.parse(resource_id), target, arm_kwargs)
        checks += verdicts.properties(host, facts.properties, facts.error, source=target is None)
    if credential is not None:
        checks = _with_audience(settings, host, audience, facts, checks)
    return checks, facts


def _with_audience(
    settings: Settings, host: str, audience: str, facts: ArmFacts, checks: list[Check]
) -> list[Check]:
    """The audience check; when the registry refuses the audience, a refused token
    exchange points at it rather than at the identity."""
    verdict = audience_checks.audience_check(
        host,
        audience,
        configured=settings.acr_audience is not None,
        works=acr_audience(host),
        arm_endpoint=settings.arm_endpoint,
        props=facts.properties,
    )
    if verdict.ok:
        return [*checks, verdict]
    refused = [replace(c, fix=verdict.fix) if c.name == "token" and not c.ok else c for c in checks]
    return [*refused, verdict]


def _identity(
    host: str, identity: RegistryIdentity, credential: TokenCredential | None, audience: str
) -> Check:
    name = "cross-tenant" if identity.cross_tenant else "identity"
    if credential is None:
        return Check(
            host, name, CheckStatus.PASS, "no Azure identity: anonymous or registry challenge"
        )
    try:
        credential.get_token(f"{audience}/.default")
    except ClientAuthenticationError as exc:
        return Check(
            host, name, CheckStatus.FAIL, _first_line(exc), verdicts.identity_fix(identity)
        )
    what = f"{identity.mode} identity gets tokens"
    if identity.cross_tenant:
        what = f"{identity.mode} credential usable: tokens for tenant {identity.tenant_id}"
    return Check(host, name, CheckStatus.PASS, what)


def _data_plane(
    registries: Registries, host: str, identity: RegistryIdentity, *, source: bool
) -> list[Check]:
    client = registries.client(host)
    try:
        answer = client.request("GET", "/v2/", retry=False)
        answer.close()
    except RegistryError as exc:
        if exc.operation not in {"token", "token exchange"}:
            return [
                Check(host, "reachable", CheckStatus.FAIL, _first_line(exc), verdicts.REACH_FIX)
            ]
        fix = verdicts.identity_fix(identity)
        return [
            Check(host, "reachable", CheckStatus.PASS, "/v2/ answers and asks for a token"),
            Check(
                host, "token", CheckStatus.FAIL, f"token exchange refused: {_first_line(exc)}", fix
            ),
        ]
    checks = [Check(host, "reachable", CheckStatus.PASS, f"/v2/ answers ({answer.status_code})")]
    if answer.status_code in {401, 403}:
        fix = verdicts.identity_fix(identity)
        return [
            *checks,
            Check(host, "token", CheckStatus.FAIL, "the registry refused the token", fix),
        ]
    if identity.mode is not IdentityMode.NONE and client.auth.token_requests:
        checks.append(
            Check(host, "token", CheckStatus.PASS, "token exchange and /v2/ with it work")
        )
    probe = _try_pull if source else _try_push
    return [*checks, probe(registries, host)]


def _try_pull(registries: Registries, host: str) -> Check:
    client = registries.client(host)
    try:
        response = client.request("GET", f"/v2/{PROBE_REPOSITORY}/tags/list", retry=False)
        response.close()
    except RegistryError as exc:
        return Check(host, "pull", CheckStatus.FAIL, _first_line(exc), verdicts.PULL_FIX)
    if response.status_code in {401, 403}:
        return Check(
            host,
            "pull",
            CheckStatus.FAIL,
            f"pull refused ({response.status_code})",
            verdicts.PULL_FIX,
        )
    return Check(host, "pull", CheckStatus.PASS, "pull allowed (tried a repository read)")


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
        return Check(host, "push", CheckStatus.FAIL, _first_line(exc), verdicts.PUSH_FIX)
    if response.status_code != 202:
        detail = f"push refused ({response.status_code})"
        return Check(host, "push", CheckStatus.FAIL, detail, verdicts.PUSH_FIX)
    return Check(host, "push", CheckStatus.PASS, "push allowed (started and cancelled an upload)")


def _arm(
    settings: Settings,
    credential: TokenCredential,
    rid: RegistryId,
    target: Target | None,
    arm_kwargs: dict[str, Any],
) -> ArmFacts:
    """The registry's properties and the caller's permissions on it; either may be
    refused (AcrPull and AcrPush cannot read a registry), the other is still asked."""
    client = management_client(credential, settings.arm_endpoint, rid.subscription, **arm_kwargs)
    properties: RegistryProperties | None = None
    error = None
    with client:
        try:
            properties = registry_properties(client, rid)
        except (HttpResponseError, AzureError) as exc:
            error = _first_line(exc)
        try:
            permissions = caller_permissions(client, rid)
        except (HttpResponseError, AzureError):
            return ArmFacts(properties, None, error)
    return ArmFacts(properties, permissions, error)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
