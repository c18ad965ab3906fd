"""``Registries``: one ``RegistryClient`` and one small ``httpx.Client`` per registry host.

One per process (or job batch). Each registry gets its own httpx client with httpx's own
transport (``bench/RESULTS.md``, ``## transport``, says why this and not urllib3):

- at most ``max_connections`` connections to each registry: per registry, not in all,
  because a blob copy holds its source connection while it uploads to the target, so with
  one limit for both, blobs copied at once could hold every connection and wait for each
  other. A small pool per registry also keeps httpcore's pool bookkeeping small;
- proxies from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` as httpx reads
  them, each proxy transport with the same limits (``NO_PROXY`` alone changes nothing);
- TLS as httpx makes it (certifi, ``SSL_CERT_FILE``, or the ``verify`` given);
- OpenTelemetry: Azure Monitor's distro instruments httpx's transport, so every registry
  request is a dependency span in Application Insights.

It also remembers what it learnt about each registry: which repositories were seen holding
a blob (for cross-repository mounts; an LRU of ``MAX_BLOB_HOMES`` digests) and whether a
registry answers the referrers API.
"""

from __future__ import annotations

import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable

import httpcore
import httpx

from replicator.adapters.oci.auth import Authenticator
from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.credentials import RegistryAuth
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.reference import is_loopback

__all__ = ["Registries", "RegistryAuth", "RegistryClient"]

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=300.0)
USER_AGENT = "acr-replicator"
MAX_BLOB_HOMES = 100_000  # digests remembered per process (a few MiB at most)
HOMES_PER_BLOB = 8


# httpcore reads a response 64 KiB at a time (``HTTP11Connection.READ_NUM_BYTES``, a class
# attribute it reads on every read); a blob copy streams hundreds of MiB, and 256 KiB reads
# cut the copy's CPU by a quarter (bench/RESULTS.md, ``## copy``). Memory stays bounded:
# one read per connection in flight.
READ_BYTES = 256 * 1024
if getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
    httpcore.HTTP11Connection.READ_NUM_BYTES = READ_BYTES


def _anonymous(host: str) -> RegistryAuth | None:
    return None


class Registries:
    """Clients per host; a context manager that closes their connections."""

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
        max_blob_homes: int = MAX_BLOB_HOMES,
    ) -> None:
        self.plain_http = plain_http
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.verify = verify
        self._tls: ssl.SSLContext | None = None  # made once, shared by every registry
        self.transport = transport  # tests: an ``httpx.MockTransport`` for every registry
        self.max_blob_homes = max(1, max_blob_homes)
        self._http: dict[str, httpx.Client] = {}
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()
        self._blob_homes: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self.referrers_api: dict[str, bool] = {}

    def http_client(self, host: str) -> httpx.Client:
        """The httpx client (and connection pool) of one registry host."""
        with self._lock:
            return self._http_client(host)

    def _http_client(self, host: str) -> httpx.Client:
        found = self._http.get(host)
        if found is None:
            found = self._http[host] = httpx.Client(
                timeout=self.timeout,
                limits=self.limits,
                verify=self._tls_context(),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                transport=self.transport,
            )
        return found

    def _tls_context(self) -> ssl.SSLContext:
        """One TLS context for all registries (loading the CA bundle costs 50 ms of CPU:
        once per ``Registries``, not once per registry); as httpx makes it, from
        ``verify`` (certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``, or the context given)."""
        if isinstance(self.verify, ssl.SSLContext):
            return self.verify
        if self._tls is None:
            self._tls = httpx.create_ssl_context(verify=self.verify)
        return self._tls

    def client(self, host: str) -> RegistryClient:
        with self._lock:
            found = self._clients.get(host)
            if found is None:
                auth = self.credentials(host) or RegistryAuth.anonymous()
                scheme = "http" if self.plain_http(host) else "https"
                http = self._http_client(host)
                found = RegistryClient(
                    host,
                    scheme=scheme,
                    http=http,
                    auth=Authenticator(host, auth, http, self.retry, scheme=scheme),
                    retry=self.retry,
                )
                self._clients[host] = found
            return found

    # -- what we learnt ------------------------------------------------------------------
    def saw_blob(self, host: str, repository: str, digest: str) -> None:
        with self._lock:
            key = (host, digest)
            homes = self._blob_homes.setdefault(key, [])
            self._blob_homes.move_to_end(key)
            if repository not in homes:
                homes.append(repository)
                del homes[:-HOMES_PER_BLOB]
            while len(self._blob_homes) > self.max_blob_homes:
                self._blob_homes.popitem(last=False)

    def blob_homes(self, host: str, digest: str) -> list[str]:
        with self._lock:
            return list(self._blob_homes.get((host, digest), ()))

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            clients, self._http = list(self._http.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
