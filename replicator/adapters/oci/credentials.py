"""Who we are to a registry: ``RegistryAuth``, built from settings or read from the Docker
config (``replicator.adapters.oci.dockerconfig``).

``RegistryAuth`` is the frozen value (an ``AuthKind``: anonymous, basic, an Azure
credential for ACR's Entra exchange, or a registry refresh token); secrets never reach a
log (``repr=False``). ``acr_audience`` is the Entra audience of an ACR's token exchange,
from its login server's cloud suffix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# The Entra audience of ACR's token exchange follows the registry's cloud, told by its
# login server's suffix. Values as the public ACR clients use them (ratify-project/ratify
# pkg/common/oras/authprovider/azure constants AADResource{Public,USGovernment,China}Cloud;
# the Azure SDKs' ContainerRegistryAudience holds the ARM audiences of the same clouds,
# accepted where a registry's azureADAuthenticationAsArmPolicy is enabled).
ACR_AUDIENCE = "https://containerregistry.azure.net"
ACR_AUDIENCES = {
    ".azurecr.io": ACR_AUDIENCE,
    ".azurecr.cn": "https://containerregistry.azure.cn",
    ".azurecr.us": "https://containerregistry.azure.us",
}
ACR_SCOPE = f"{ACR_AUDIENCE}/.default"


def acr_audience(login_server: str) -> str:
    """The Entra audience for ``login_server``'s token exchange, from its cloud suffix."""
    host = login_server.lower().partition(":")[0]
    for suffix, audience in ACR_AUDIENCES.items():
        if host.endswith(suffix):
            return audience
    return ACR_AUDIENCE


class AuthKind(StrEnum):
    ANONYMOUS = "anonymous"
    BASIC = "basic"  # username and password
    AZURE = "azure"  # an Entra credential, exchanged at ACR's /oauth2/exchange
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a registry refresh token (identitytoken)


@dataclass(frozen=True)
class RegistryAuth:
    """Who we are to one registry. Build with the class methods."""

    kind: AuthKind = AuthKind.ANONYMOUS
    username: str = ""
    password: str = field(default="", repr=False)
    credential: TokenCredential | None = field(default=None, repr=False, compare=False)
    tenant: str | None = None
    audience: str | None = None  # azure: the Entra audience (None: from the login server)
    realms: tuple[str, ...] = ()  # token realm origins allowed besides the registry's own

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AuthKind(self.kind))  # a kind given as text

    @classmethod
    def anonymous(cls) -> RegistryAuth:
        return cls()

    @classmethod
    def basic(cls, username: str, password: str, realms: Iterable[str] = ()) -> RegistryAuth:
        """Basic credentials; ``realms``: token service origins (``https://auth.example``)
        on another origin than the registry's that may receive them."""
        return cls(AuthKind.BASIC, username, password, realms=tuple(realms))

    @classmethod
    def azure(
        cls, credential: TokenCredential, tenant: str | None = None, audience: str | None = None
    ) -> RegistryAuth:
        """ACR: an Entra token exchanged for a registry refresh token, then access tokens.
        ``audience`` overrides the one the login server's cloud suffix gives."""
        return cls(AuthKind.AZURE, credential=credential, tenant=tenant, audience=audience)

    @classmethod
    def refresh_token(cls, token: str) -> RegistryAuth:
        """A registry refresh token (Docker config ``identitytoken``)."""
        return cls(AuthKind.REFRESH_TOKEN, password=token)
