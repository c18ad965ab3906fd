"""Which Entra audience a registry's token exchange is asked for, and whether the registry
takes it. Pure.

The worker asks for ``REPLICATOR_ACR_AUDIENCE``, else the ACR audience of the login
server's cloud (``replicator.adapters.azure.credentials.registry_audience``). A registry takes
its cloud's
ACR audience always, and an ARM audience only while its
``policies.azureADAuthenticationAsArmPolicy.status`` is ``enabled`` (the default; ARM's
registry properties, azure-rest-api-specs Microsoft.ContainerRegistry
Registry.models.tsp ``Policies``, in every stable version from 2025-04-01 on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.app.doctor.verdicts import Check, CheckStatus

if TYPE_CHECKING:
    from replicator.adapters.acr.arm import RegistryProperties

# The ARM audience of each cloud (the Azure SDKs' ContainerRegistryAudience values, as
# docs/identity.md cites them): a registry's token exchange takes a token for one of these
# only while its policies.azureADAuthenticationAsArmPolicy is enabled, and its cloud's ACR
# audience always. The ARM endpoint in use (REPLICATOR_ARM_ENDPOINT) counts as one too.
ARM_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.chinacloudapi.cn",
        "https://management.usgovcloudapi.net",
    }
)


def is_arm_audience(audience: str, arm_endpoint: str) -> bool:
    """Whether ``audience`` names ARM (a cloud's, or the ARM endpoint in use)."""
    wanted = audience.removesuffix("/.default").rstrip("/").lower()
    return wanted in ARM_AUDIENCES or wanted == arm_endpoint.rstrip("/").lower()


def audience_check(
    host: str,
    audience: str,
    *,
    configured: bool,
    works: str,
    arm_endpoint: str,
    props: RegistryProperties | None,
) -> Check:
    """Which Entra audience the replicator asks for ``host``'s token exchange, and whether
    the registry takes it: ``configured`` (``REPLICATOR_ACR_AUDIENCE``) or derived from the
    login server's cloud; ``works`` is that cloud's ACR audience, accepted whatever the
    registry's ``azureADAuthenticationAsArmPolicy`` says; ``props`` None: not read."""
    where = "REPLICATOR_ACR_AUDIENCE" if configured else "from the login server's cloud"
    said = f"tokens are asked for {audience} ({where})"
    fix = (
        f"set REPLICATOR_ACR_AUDIENCE to {works}, or remove it (each registry's cloud's ACR "
        "audience is then used)"
    )
    if not is_arm_audience(audience, arm_endpoint):
        if configured and audience.rstrip("/").lower() != works.lower():
            return Check(
                host,
                "audience",
                CheckStatus.WARN,
                f"{said}: not this login server's cloud's ({works})",
                fix,
            )
        if props is not None and not props.arm_audience_accepted:
            said += (
                "; ARM-audience tokens are refused here (azureADAuthenticationAsArmPolicy disabled)"
            )
        return Check(host, "audience", CheckStatus.PASS, said)
    if props is None:
        return Check(
            host,
            "audience",
            CheckStatus.WARN,
            f"{said}, an ARM audience: taken only while the registry's "
            f"azureADAuthenticationAsArmPolicy is enabled, which could not be read; {works} "
            "works whatever the policy",
            fix,
        )
    if props.arm_audience_accepted:
        return Check(
            host,
            "audience",
            CheckStatus.PASS,
            f"{said}, an ARM audience: taken while azureADAuthenticationAsArmPolicy is "
            f"enabled, as it is; {works} works whatever the policy",
        )
    return Check(
        host,
        "audience",
        CheckStatus.FAIL,
        f"{said}, an ARM audience, which this registry refuses (its "
        f"azureADAuthenticationAsArmPolicy is disabled): every token exchange fails; {works} works",
        f"{fix}; or let the registry take ARM-audience tokens: az acr config "
        f"authentication-as-arm update -r {props.name} --status enabled",
    )
