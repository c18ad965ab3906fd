"""Identity without secrets: which identity each registry uses, parsed from settings
(the credentials are built from it in ``replicator.adapters.azure.credentials``).

Modes, named per registry in ``REPLICATOR_IDENTITIES`` (a JSON object keyed by login
server) or for every ACR by ``REPLICATOR_IDENTITY``:

- ``managed``: the function's managed identity (user-assigned when ``AZURE_CLIENT_ID`` is
  set). The default inside Azure.
- ``federated``: another tenant. A multi-tenant app (``client_id``) in that tenant
  (``tenant_id``) trusts the managed identity through a federated identity credential;
  ``ClientAssertionCredential`` is fed the managed identity's token for
  ``api://AzureADTokenExchange``. No secret anywhere.
- ``secret``: a service principal whose secret sits in the app setting named by
  ``secret_setting`` (a Key Vault reference the platform resolves). Only for tenants that
  cannot federate.
- ``default``: ``DefaultAzureCredential`` (``az login`` on a workstation). The default
  outside Azure.
- ``none``: anonymous (local registries, public sources).

``auto`` (the default of ``REPLICATOR_IDENTITY``) is ``managed`` when the host provides a
managed identity endpoint (``IDENTITY_ENDPOINT``) and ``default`` otherwise. Registries
that are not ACR get ``none`` unless ``REPLICATOR_IDENTITIES`` names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from replicator.domain.envjson import json_object
from replicator.domain.errors import InvalidReferenceError
from replicator.domain.model import is_acr_host
from replicator.domain.reference import parse_registry

if TYPE_CHECKING:
    from replicator.domain.config import Settings


class IdentityMode(StrEnum):
    """How a registry is authenticated to (the module's list)."""

    MANAGED = "managed"
    FEDERATED = "federated"
    SECRET = "secret"  # noqa: S105 - a mode's name
    DEFAULT = "default"
    NONE = "none"


MODES = tuple(IdentityMode)
# what REPLICATOR_IDENTITY may name for every ACR (besides auto)
DEFAULT_MODES = (IdentityMode.MANAGED, IdentityMode.DEFAULT, IdentityMode.NONE)
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope
_KEYS = {"mode", "tenant_id", "client_id", "secret_setting"}
_NEEDS = {
    IdentityMode.FEDERATED: ("tenant_id", "client_id"),
    IdentityMode.SECRET: ("tenant_id", "client_id", "secret_setting"),
}


class Secret:
    """A value that never prints."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RegistryIdentity:
    """How to authenticate to one registry (and to ARM for it)."""

    mode: IdentityMode = IdentityMode.NONE
    tenant_id: str | None = None
    client_id: str | None = None  # the app (federated / secret), not the managed identity
    secret_setting: str | None = None
    secret: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", IdentityMode(self.mode))  # a name given as text

    @property
    def cross_tenant(self) -> bool:
        """A tenant other than the function's: import must name the source by URI."""
        return self.mode in {IdentityMode.FEDERATED, IdentityMode.SECRET}


@dataclass(frozen=True)
class IdentitySettings:
    default_mode: IdentityMode = IdentityMode.DEFAULT  # for ACR registries without an entry
    registries: tuple[tuple[str, RegistryIdentity], ...] = ()
    managed_client_id: str | None = None  # AZURE_CLIENT_ID: a user-assigned identity
    authority_host: str | None = None  # AZURE_AUTHORITY_HOST: sovereign clouds, test doubles

    def for_registry(self, registry: str, *, is_acr: bool | None = None) -> RegistryIdentity:
        for name, identity in self.registries:
            if name == registry:
                return identity
        acr = is_acr_host(registry) if is_acr is None else is_acr
        return RegistryIdentity(mode=self.default_mode if acr else IdentityMode.NONE)


def parse_identity_settings(env: Mapping[str, str], problems: list[str]) -> IdentitySettings:
    """Read ``REPLICATOR_IDENTITY``, ``REPLICATOR_IDENTITIES``, ``AZURE_CLIENT_ID`` and
    ``AZURE_AUTHORITY_HOST``; append what is wrong or missing to ``problems``."""
    named = env.get("REPLICATOR_IDENTITY", "").strip() or "auto"
    if named == "auto":
        named = IdentityMode.MANAGED if env.get("IDENTITY_ENDPOINT") else IdentityMode.DEFAULT
    default = IdentityMode.NONE
    if named in DEFAULT_MODES:
        default = IdentityMode(named)
    else:
        problems.append("REPLICATOR_IDENTITY must be auto, managed, default or none")
    authority = env.get("AZURE_AUTHORITY_HOST", "").strip().rstrip("/") or None
    if authority and not authority.startswith("https://"):
        problems.append("AZURE_AUTHORITY_HOST must be an https:// URL")
    entries = _parse_entries(env, problems)
    return IdentitySettings(
        default_mode=default,
        registries=tuple(entries.items()),
        managed_client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
        authority_host=authority,
    )


def _parse_entries(env: Mapping[str, str], problems: list[str]) -> dict[str, RegistryIdentity]:
    raw = env.get("REPLICATOR_IDENTITIES", "").strip()
    if not raw:
        return {}
    shape = "a JSON object keyed by login server"
    loaded = json_object(raw, "REPLICATOR_IDENTITIES", shape, problems)
    if loaded is None:
        return {}
    entries: dict[str, RegistryIdentity] = {}
    for server, item in loaded.items():
        where = f"REPLICATOR_IDENTITIES[{server!r}]"
        try:
            name = parse_registry(server)
        except InvalidReferenceError as exc:
            problems.append(f"{where}: {exc}")
            continue
        identity = _parse_entry(where, item, env, problems)
        if identity is not None:
            entries[name] = identity
    return entries


def _parse_entry(
    where: str, item: Any, env: Mapping[str, str], problems: list[str]
) -> RegistryIdentity | None:
    if isinstance(item, str):
        item = {"mode": item}
    if not isinstance(item, dict):
        problems.append(f"{where} must be an object with mode")
        return None
    unknown = set(item) - _KEYS
    if unknown:
        problems.append(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    named = item.get("mode")
    if named not in MODES:
        problems.append(f"{where}.mode must be one of {', '.join(MODES)}")
        return None
    mode = IdentityMode(named)
    values = {k: item.get(k) for k in ("tenant_id", "client_id", "secret_setting")}
    needs = _NEEDS.get(mode, ())
    missing = [k for k in needs if not isinstance(values[k], str) or not values[k]]
    if missing:
        problems.append(f"{where}: mode {mode} needs {' and '.join(missing)}")
        return None
    secret = None
    if mode is IdentityMode.SECRET:
        secret = _read_secret(where, str(values["secret_setting"]), env, problems)
        if secret is None:
            return None
    return RegistryIdentity(
        mode=mode,
        tenant_id=values["tenant_id"],
        client_id=values["client_id"],
        secret_setting=values["secret_setting"],
        secret=secret,
    )


def _read_secret(
    where: str, setting: str, env: Mapping[str, str], problems: list[str]
) -> Secret | None:
    value = env.get(setting, "").strip()
    if not value:
        problems.append(f"{where}: the app setting {setting} (the client secret) is not set")
        return None
    if value.startswith("@Microsoft.KeyVault("):
        problems.append(
            f"{where}: the Key Vault reference in {setting} was not resolved: grant the "
            "function's identity 'Key Vault Secrets User' on the vault"
        )
        return None
    return Secret(value)


def identity_of(settings: Settings, registry: str) -> RegistryIdentity:
    """A registry with an ARM id is an ACR even on a loopback address (test doubles)."""
    has_id = (registry == settings.source and settings.source_resource_id is not None) or any(
        t.login_server == registry and t.resource_id for t in settings.targets
    )
    return settings.identity.for_registry(registry, is_acr=is_acr_host(registry) or has_id)
