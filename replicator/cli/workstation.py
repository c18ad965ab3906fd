"""Credentials and transport choices for a command run on a workstation (not in Azure).

Credentials come from the Docker config for the host (``docker login``, ``az acr login``:
its credential helper or store, else its ``auths`` entry; ``$DOCKER_CONFIG`` honoured),
else, for an ACR, the Azure CLI / environment identity exchanged for a registry token,
else anonymous. Plain HTTP is for loopback hosts and the hosts listed in
``REPLICATOR_PLAIN_HTTP`` (or given on the command line).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.dockerconfig import docker_config_auth
from replicator.domain.model import is_acr_host
from replicator.domain.reference import is_loopback, parse_registry


def workstation_credentials(
    docker_config: Path | None = None,
) -> Callable[[str], RegistryAuth | None]:
    """``credentials`` for ``Registries``: Docker config, else Azure identity for an ACR."""
    cache: dict[str, RegistryAuth | None] = {}
    lock = threading.Lock()

    def credentials(host: str) -> RegistryAuth | None:
        with lock:
            if host not in cache:
                found = docker_config_auth(host, docker_config)
                if found is None and is_acr_host(host):
                    from azure.identity import DefaultAzureCredential

                    found = RegistryAuth.azure(DefaultAzureCredential())
                cache[host] = found
            return cache[host]

    return credentials


def plain_http_hosts(env: Mapping[str, str], extra: Iterable[str] = ()) -> Callable[[str], bool]:
    """``plain_http`` for ``Registries``: loopback, ``REPLICATOR_PLAIN_HTTP`` and ``extra``."""
    listed = [h.strip() for h in env.get("REPLICATOR_PLAIN_HTTP", "").split(",") if h.strip()]
    hosts = frozenset(parse_registry(h) for h in [*listed, *extra])
    return lambda host: is_loopback(host) or host in hosts
