"""What the Docker CLI would use for a registry: ``docker_config_auth`` reads
``$DOCKER_CONFIG/config.json`` (else ``~/.docker/config.json``): a credential helper
(``credHelpers``, else ``credsStore``, run as ``docker-credential-<name> get``) or the
``auths`` entry, as a ``RegistryAuth``. Used on a workstation (the CLI); the deployed
worker authenticates with its Azure identity. What a helper prints is never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from replicator.adapters.oci.credentials import RegistryAuth

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 60.0
HELPER_TOKEN_USER = "<token>"  # noqa: S105 (Docker CLI: the secret is an identity token)
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
