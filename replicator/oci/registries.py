"""``Registries``: one ``RegistryClient`` per host, sharing one httpx client and its
connection pool (``replicator.oci.pool``).

One per process (or job batch). It also remembers what it learnt about each registry:
which repositories were seen holding a blob (for cross-repository mounts) and whether a
registry answers the referrers API.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from urllib.request import getproxies

import httpx

from replicator.oci.auth import Authenticator, RegistryAuth, docker_config_auth
from replicator.oci.client import RegistryClient
from replicator.oci.pool import PooledTransport
from replicator.oci.reference import is_loopback
from replicator.oci.transport import RetryPolicy

__all__ = ["Registries", "RegistryAuth", "RegistryClient", "docker_config_auth"]

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=300.0)
USER_AGENT = "acr-replicator"


def _anonymous(host: str) -> RegistryAuth | None:
    return None


class Registries:
    """Clients per host; a context manager that closes the pool."""

    def __init__(
        self,
        *,
        plain_http: Callable[[str], bool] = is_loopback,
        credentials: Callable[[str], RegistryAuth | None] = _anonymous,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_connections: int = 64,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.plain_http = plain_http
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        # Our transport (``replicator.oci.pool``) limits connections per registry. Behind a
        # proxy named in the environment (``HTTPS_PROXY``...), which ours does not speak,
        # httpx's own transport: its limit is one for all registries, where blob copies
        # holding a source connection while they wait for a target one could take every
        # connection, so there the callers' thread pools are the only bound.
        proxied = transport is None and bool(getproxies())
        limits = httpx.Limits(
            max_connections=None if proxied else max_connections,
            max_keepalive_connections=max_connections,
        )
        if transport is None and not proxied:
            transport = PooledTransport(verify=verify, limits=limits)
        self.http = httpx.Client(
            timeout=timeout,
            limits=limits,
            verify=verify,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()
        self._blob_homes: dict[tuple[str, str], list[str]] = {}
        self.referrers_api: dict[str, bool] = {}

    def client(self, host: str) -> RegistryClient:
        with self._lock:
            found = self._clients.get(host)
            if found is None:
                auth = self.credentials(host) or RegistryAuth.anonymous()
                scheme = "http" if self.plain_http(host) else "https"
                found = RegistryClient(
                    host,
                    scheme=scheme,
                    http=self.http,
                    auth=Authenticator(host, auth, self.http, self.retry, scheme=scheme),
                    retry=self.retry,
                )
                self._clients[host] = found
            return found

    # -- what we learnt ------------------------------------------------------------------
    def saw_blob(self, host: str, repository: str, digest: str) -> None:
        with self._lock:
            homes = self._blob_homes.setdefault((host, digest), [])
            if repository not in homes:
                homes.append(repository)
                del homes[:-8]

    def blob_homes(self, host: str, digest: str) -> list[str]:
        with self._lock:
            return list(self._blob_homes.get((host, digest), ()))

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Registries:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
