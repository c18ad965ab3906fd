"""The Azure credentials behind each registry's identity (``replicator.domain.identities``
names the identity; this module builds the ``azure-identity`` credential for it), and the
data-plane auth the OCI engine uses for an ACR."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replicator.adapters.oci.credentials import RegistryAuth, acr_audience
from replicator.domain.identities import (
    TOKEN_EXCHANGE_SCOPE,
    IdentityMode,
    IdentitySettings,
    RegistryIdentity,
    identity_of,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from replicator.domain.config import Settings


def credential_for(settings: Settings, registry: str) -> TokenCredential | None:
    """The credential for ``registry`` (ARM calls for it, and its data plane), or None."""
    return credential_from(settings.identity, identity_of(settings, registry))


def _authority(host: str | None) -> dict[str, Any]:
    """``authority=`` for a non-public cloud; MSAL's instance discovery only knows the
    Azure clouds, so it is turned off for any other authority (Azure Stack, doubles)."""
    from azure.identity import AzureAuthorityHosts

    if not host:
        return {}
    known = {f"https://{h}" for h in vars(AzureAuthorityHosts).values() if isinstance(h, str)}
    return {"authority": host} | ({} if host in known else {"disable_instance_discovery": True})


def credential_from(config: IdentitySettings, identity: RegistryIdentity) -> TokenCredential | None:
    from azure.identity import (
        ClientAssertionCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    authority = _authority(config.authority_host)
    if identity.mode is IdentityMode.MANAGED:
        return ManagedIdentityCredential(client_id=config.managed_client_id)
    if identity.mode is IdentityMode.FEDERATED:
        tenant, client = str(identity.tenant_id), str(identity.client_id)  # load_settings checked
        managed = ManagedIdentityCredential(client_id=config.managed_client_id)

        def assertion() -> str:
            return str(managed.get_token(TOKEN_EXCHANGE_SCOPE).token)

        return ClientAssertionCredential(tenant, client, assertion, **authority)
    if identity.mode is IdentityMode.SECRET:
        secret = identity.secret.reveal() if identity.secret else ""
        tenant, client = str(identity.tenant_id), str(identity.client_id)
        return ClientSecretCredential(tenant, client, secret, **authority)
    if identity.mode is IdentityMode.DEFAULT:
        return DefaultAzureCredential(
            managed_identity_client_id=config.managed_client_id, **authority
        )
    return None


def registry_audience(settings: Settings, host: str) -> str:
    """The Entra audience of ``host``'s token exchange (no ``/.default``), for the worker
    and doctor alike: ``REPLICATOR_ACR_AUDIENCE``, else the login server's cloud's."""
    return settings.acr_audience or acr_audience(host)


def registry_credentials(settings: Settings) -> Callable[[str], RegistryAuth | None]:
    """``Registries(credentials=...)``: the data-plane auth per host, one credential each.

    ACR registries get ``RegistryAuth.azure`` (the OCI engine exchanges the Entra token at
    ``/oauth2/exchange``, naming the registry's tenant when it is another one, for the
    audience ``REPLICATOR_ACR_AUDIENCE`` names, else the login server's cloud's); registries
    with no identity get None (anonymous, or what the registry's challenge allows)."""
    cache: dict[str, RegistryAuth | None] = {}

    def credentials(host: str) -> RegistryAuth | None:
        if host not in cache:
            identity = identity_of(settings, host)
            credential = credential_from(settings.identity, identity)
            audience = registry_audience(settings, host)
            cache[host] = (
                RegistryAuth.azure(credential, tenant=identity.tenant_id, audience=audience)
                if credential
                else None
            )
        return cache[host]

    return credentials
