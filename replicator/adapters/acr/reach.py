"""Reading an import target's data plane when the worker may not reach it.

Strategy ``import`` is chosen where the worker may have no route to the target's data
plane at all: a registry with ``publicNetworkAccess: Disabled`` behind a private endpoint
only the registry's own services use, a DNS zone the worker's network does not resolve.
ImportImage needs none of it (ARM, then the registry itself, moves the data), so for
such a target each data-plane read is *optional*: :func:`read_manifest` makes one HEAD,
not retried, and a transport failure (refused, reset, unresolvable, timed out) or a
transient answer (429, 5xx) is "not known" instead of an error. A transport failure is
remembered per target for :data:`REACH_TTL` (:class:`DataPlaneReach`), so later jobs do
not pay a connect timeout each; the first successful read forgets it. An answer the
registry *gave* (401, 403, any other 4xx) is raised as before: the target is reachable,
and a missing role is not hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from replicator.adapters.oci.transport import expect
from replicator.domain.errors import DeferRequested, TransientRegistryError
from replicator.domain.expiring import Expiring
from replicator.domain.manifests import ACCEPT
from replicator.domain.model import utcnow

if TYPE_CHECKING:
    import httpx

    from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)

REACH_TTL = timedelta(minutes=15)
REACH_LIMIT = 256  # targets remembered at most


class ManifestRequester(Protocol):
    """The slice of a registry client (``replicator.adapters.oci.client.RegistryClient``,
    ``replicator.app.ports.RegistryClient``) that one optional read needs."""

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        operation: str = "",
        reference: str = "",
        retry: bool = True,
    ) -> httpx.Response: ...


@dataclass(frozen=True)
class Seen:
    """What one read of a target told: the digest behind the reference (None: nothing
    there), or, with ``known`` False, that the target could not be read, and ``why``."""

    digest: str | None
    known: bool = True
    why: str = ""


class DataPlaneReach:
    """Per target, "its data plane did not answer", for ``ttl``. In-process, bounded,
    safe across worker threads."""

    def __init__(
        self,
        ttl: timedelta = REACH_TTL,
        *,
        limit: int = REACH_LIMIT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._down: Expiring[str] = Expiring(ttl, limit=limit, clock=clock)

    def mark(self, host: str, why: str) -> None:
        self._down.put(host, why[:300])

    def unreachable(self, host: str) -> str | None:
        """Why ``host`` did not answer, while that is remembered; None otherwise."""
        found = self._down.get(host)
        if found is None:
            return None
        until, why = found
        return f"{why} (remembered until {until:%H:%M:%SZ})"

    def forget(self, host: str) -> None:
        self._down.forget(host)


def read_manifest(client: ManifestRequester, ref: ImageRef, reach: DataPlaneReach) -> Seen:
    """One HEAD of ``ref`` in an import target, not retried (see the module's docstring)."""
    host = ref.registry
    remembered = reach.unreachable(host)
    if remembered is not None:
        return Seen(None, known=False, why=remembered)
    try:
        response = client.request(
            "HEAD",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            headers={"Accept": ACCEPT},
            operation="HEAD manifest",
            reference=str(ref),
            retry=False,
        )
    except DeferRequested:
        raise
    except TransientRegistryError as exc:
        if exc.status is None:  # no answer at all: a transport failure
            reach.mark(host, str(exc))
        return Seen(None, known=False, why=str(exc)[:300])
    reach.forget(host)
    if response.status_code == 404:
        return Seen(None)
    expect(response, (200,), "HEAD manifest", str(ref))
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        return Seen(None, known=False, why=f"{host} named no Docker-Content-Digest")
    return Seen(digest)
