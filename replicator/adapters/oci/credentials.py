"""Who we are to a registry: ``RegistryAuth``, from settings or the Docker config.

``RegistryAuth`` is the frozen value (anonymous, basic, an Azure credential for ACR's
Entra exchange, or a registry refresh token); secrets never reach a log (``repr=False``).
``docker_config_auth`` reads what the Docker CLI would for a host: a credential helper
(``credHelpers``, ``credsStore``) or the ``auths`` entry. ``acr_audience`` is the Entra
audience of an ACR's token exchange, from its login server's cloud suffix.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

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
HELPER_TIMEOUT = 60.0
HELPER_TOKEN_USER = "<token>"  # noqa: S105 (Docker CLI: the secret is an identity token)
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def acr_audience(login_server: str) -> str:
    """The Entra audience for ``login_server``'s token exchange, from its cloud suffix."""
    host = login_server.lower().partition(":")[0]
    for suffix, audience in ACR_AUDIENCES.items():
        if host.endswith(suffix):
            return audience
    return ACR_AUDIENCE


@dataclass(frozen=True)
class RegistryAuth:
    """Who we are to one registry. Build with the class methods."""

    kind: str = "anonymous"  # anonymous | basic | azure | refresh_token
    username: str = ""
    password: str = field(default="", repr=False)
    credential: TokenCredential | None = field(default=None, repr=False, compare=False)
    tenant: str | None = None
    audience: str | None = None  # azure: the Entra audience (None: from the login server)
    realms: tuple[str, ...] = ()  # token realm origins allowed besides the registry's own

    @classmethod
    def anonymous(cls) -> RegistryAuth:
        return cls()

    @classmethod
    def basic(cls, username: str, password: str, realms: Iterable[str] = ()) -> RegistryAuth:
        """Basic credentials; ``realms``: token service origins (``https://auth.example``)
        on another origin than the registry's that may receive them."""
        return cls("basic", username, password, realms=tuple(realms))

    @classmethod
    def azure(
        cls, credential: TokenCredential, tenant: str | None = None, audience: str | None = None
    ) -> RegistryAuth:
        """ACR: an Entra token exchanged for a registry refresh token, then access tokens.
        ``audience`` overrides the one the login server's cloud suffix gives."""
        return cls("azure", credential=credential, tenant=tenant, audience=audience)

    @classmethod
    def refresh_token(cls, token: str) -> RegistryAuth:
        """A registry refresh token (Docker config ``identitytoken``)."""
        return cls("refresh_token", password=token)


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (as the Docker CLI)."""
    folder = (os.environ if env is None else env).get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def docker_config_auth(host: str, path: Path | None = None) -> RegistryAuth | None:
    """What the Docker config says for ``host``, or None.

    As the Docker CLI: a ``credHelpers`` entry for the host, else the ``credsStore``, runs
    ``docker-credential-<name> get``; otherwise (or when the helper knows nothing of the
    host) the ``auths`` entry. A helper's username ``<token>`` means its secret is an
    identity (refresh) token, which is what ``az acr login`` stores.
    """
    try:
        config = json.loads((path or docker_config_path()).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    key = _auth_entry_key(helpers, host)
    name = helpers[key] if key is not None else config.get("credsStore")
    if isinstance(name, str) and name:
        found = credential_helper_auth(name, host)
        if found is not None:
            return found
    auths = config.get("auths")
    entry = _auth_entry(auths if isinstance(auths, dict) else {}, host)
    if entry is None:
        return None
    if entry.get("identitytoken"):
        return RegistryAuth.refresh_token(str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return RegistryAuth.basic(user, password)
    if entry.get("username"):
        return RegistryAuth.basic(str(entry["username"]), str(entry.get("password", "")))
    return None


def credential_helper_auth(name: str, host: str) -> RegistryAuth | None:
    """Ask ``docker-credential-<name>`` for ``host``; None if it has nothing or fails.

    What it prints is never logged (it holds the secret); a failure is one warning line.
    """
    if not _HELPER_NAME.fullmatch(name):
        log.warning("Docker config names credential helper %r: not a helper name", name)
        return None
    program = f"docker-credential-{name}"
    for server in (host, f"https://{host}"):
        try:
            done = subprocess.run(
                [program, "get"],
                input=server,
                capture_output=True,
                text=True,
                timeout=HELPER_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("credential helper %s for %s: %s", program, host, type(exc).__name__)
            return None
        if done.returncode != 0:
            continue  # "credentials not found in native keychain": try the next spelling
        try:
            answer = json.loads(done.stdout)
            username, secret = str(answer["Username"]), str(answer["Secret"])
        except (ValueError, KeyError, TypeError):
            log.warning("credential helper %s for %s: unreadable answer", program, host)
            return None
        if username == HELPER_TOKEN_USER:
            return RegistryAuth.refresh_token(secret)
        return RegistryAuth.basic(username, secret)
    return None


def _auth_entry_key(entries: dict[str, Any], host: str) -> str | None:
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
        if key in entries:
            return key
    return None


def _auth_entry(auths: dict[str, Any], host: str) -> dict[str, Any] | None:
    key = _auth_entry_key(auths, host)
    return dict(auths[key]) if key is not None and isinstance(auths[key], dict) else None
