"""The interfaces the app reaches the outside world through, and nothing more.

Each Protocol holds exactly the calls ``replicator.app`` and ``replicator.functions`` make
on that resource; ``replicator.app.runtime.Runtime`` is typed against them, and
``build_runtime`` (the composition root) plugs in the adapters: ``replicator.adapters.oci``
(registries, copy, referrer listings), ``replicator.adapters.acr`` (import),
``replicator.adapters.azure`` (queues, status table, push claims, sweep cursors, plan
blobs). ``tests/fakes.py`` holds in-memory ones.

The registry client is the one wide port: besides manifests by reference and blobs by
``HEAD`` (what the integrity audit reads) it lends its authenticated ``request`` to the
modules that speak an API of their own over it (listing, the optional read of an import
target, the tag delete), each of which names the slice it uses in a Protocol of its own;
this one is the union of those slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx

from replicator.adapters.azure.claims import Claim
from replicator.adapters.azure.cursors import Cursor
from replicator.domain.budgets import BudgetState
from replicator.domain.manifests import Manifest
from replicator.domain.model import CopyJob, CopyReport, Descriptor, JobResult, Target
from replicator.domain.reference import ImageRef
from replicator.domain.referrers import ListedReferrer


class DeliveryPath(StrEnum):
    """Which path put an image into a target (``JobResult.strategy``, the status row's
    ``strategy``): ARM ImportImage, a copy over the data plane, or an untag only."""

    IMPORT = "import"
    COPY = "copy"
    UNTAG = "untag"


# -- registries -------------------------------------------------------------------------
class RegistryClient(Protocol):
    """One registry host, authenticated, behind the one retry layer."""

    host: str  # the registry's host name (``host[:port]``), as configured
    base: str  # the registry's origin, ``https://host[:port]`` (listing stays on it)

    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        """The descriptor behind a tag or digest, or None when it does not exist."""
        ...

    def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest behind a tag or digest, read whole (bounded) and, by digest,
        checked against it: ``NotFoundError`` when absent, ``DigestMismatchError`` when
        its bytes hash to another digest (the integrity audit, ``replicator.app.
        image_audit``, reads manifests so)."""
        ...

    def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob (config or layer) ``repository`` holds, or None when it
        does not (``HEAD /v2/<name>/blobs/<digest>``: no bytes pulled)."""
        ...

    def delete_manifest(self, ref: ImageRef) -> None:
        """Delete a manifest by digest (a tag reference resolves first)."""
        ...

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        scopes: Iterable[str] = (),
        operation: str = "",
        reference: str = "",
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """An authenticated request; answers any status no retry fixes (the caller
        decides), raises ``TransientRegistryError`` when 429/5xx/transport failures
        outlast the retries (``retry=False``: after one try)."""
        ...


class RegistryClients(Protocol):
    def client(self, host: str) -> RegistryClient:
        """The client of ``host`` (one per host, made on first use)."""
        ...

    def close(self) -> None: ...


class ReferrerLister(Protocol):
    """The referrers (signatures, SBOMs, attestations) of manifests, on any configured
    registry (``replicator.adapters.oci.referrer_lister.RegistryReferrers``): what referrer
    drift compares. Its requests go through the registry clients, so their pacer."""

    def subjects(self, host: str, repository: str, digest: str) -> tuple[str, ...] | None:
        """``digest`` and the manifests it lists (an index's children), or None when
        ``host`` does not hold it."""
        ...

    def referrers(
        self, host: str, repository: str, subject: str, *, fallback_first: bool = False
    ) -> tuple[ListedReferrer, ...]:
        """The referrers of ``repository@subject`` on ``host``: the referrers API's
        answer, else the ``sha256-<hex>`` fallback tag's index (``fallback_first``: that
        one first while the registry's kind is unknown). Raises ``RegistryError`` when
        the listing cannot be read whole."""
        ...

    def unlist(self, host: str, repository: str, digest: str) -> str | None:
        """Before ``repository@digest`` is deleted from ``host``: when it is a referrer
        listed under its subject's fallback tag (a registry without the API), rewrite that
        tag without it. The subject whose tag was rewritten, or None."""
        ...


# -- delivery ---------------------------------------------------------------------------
class Copier(Protocol):
    def copy_image(self, src: ImageRef, dst: ImageRef, *, repair: bool = False) -> CopyReport:
        """Copy ``src`` (tag or digest) to ``dst``: whole index, blobs, referrers, tag last.
        ``repair``: even what ``dst`` holds, every blob and child checked and completed."""
        ...


class Importer(Protocol):
    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        """Server-side import of ``job.repository@digest`` into ``target`` (tagged per job)."""
        ...


class Deliver(Protocol):
    """Puts ``job.repository@digest`` into ``target`` (``replicator.app.delivery.Planner``:
    import or copy as the strategy chose, with the fallback); says which path ran."""

    def __call__(
        self, job: CopyJob, target: Target, digest: str
    ) -> tuple[CopyReport, DeliveryPath]: ...


# -- queues -----------------------------------------------------------------------------
class JobQueue(Protocol):
    """The jobs queue and its poison queue."""

    @property
    def poison_name(self) -> str: ...

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        """Enqueue ``job``, visible after ``delay_seconds``."""
        ...

    def send_poison(self, body: str, reason: str) -> None:
        """Park a message no retry can fix on the poison queue, with its reason."""
        ...

    def depth(self, queue: str | None = None) -> int:
        """The approximate length of the jobs queue, or of ``queue`` (its poison queue)."""
        ...

    def replay_poison(self, repository: str | None = None, limit: int = 10_000) -> int:
        """Move poison messages (of ``repository``, or all) back; how many moved."""
        ...


class PlanQueue(Protocol):
    """The resync plans queue (``replication-plans``) and its poison queue."""

    def send_text(self, text: str, *, delay_seconds: int = 0) -> None: ...

    def send_poison(self, body: str, reason: str) -> None: ...

    def depth(self) -> int: ...


class PlanBlobStore(Protocol):
    def put(self, plan_id: str, text: str) -> str:
        """Store a dry-run plan document; its URL."""
        ...


# -- status -----------------------------------------------------------------------------
class StatusStore(Protocol):
    """The status table: a row per image and target, the last reconcile, the targets that
    refuse tag deletes, and the resync plans' rows."""

    def record(self, result: JobResult) -> None: ...

    def images(self, repository: str, tag: str | None) -> list[dict[str, object]]: ...

    def since(self, when: datetime) -> list[dict[str, object]]: ...

    def record_reconcile(self, drift: dict[str, dict[str, int]], enqueued: int) -> None: ...

    def last_reconcile(self) -> dict[str, object] | None: ...

    def record_untag_refused(self, target: str, reason: str) -> None: ...

    def untag_refused(self, target: str) -> str | None:
        """Why ``target`` refused a tag delete lately, or None (then one more is tried)."""
        ...

    def record_plan(
        self, plan_id: str, request: str, state: str, *, started: datetime | None = None
    ) -> None: ...

    def update_plan(self, plan_id: str, **fields: object) -> None: ...

    def plan(self, plan_id: str) -> dict[str, Any] | None: ...


class PushClaims(Protocol):
    """One claim per push of a job, so duplicate deliveries of it cost one copy."""

    def claim(self, job: CopyJob) -> Claim:
        """``OWNED`` (replicate it), ``DONE`` (already replicated) or ``BUSY`` (under way
        elsewhere, check back later)."""
        ...

    def release(self, job: CopyJob, *, done: bool) -> None:
        """Mark the claimed push done, or give the claim up so a retry can take it."""
        ...


class CursorStore(Protocol):
    """Where rolling sweeps keep their place between passes (referrer drift's
    ``referrers|<target>``, the verify sweep's ``verify|<target>``):
    ``replicator.adapters.azure.cursors.TableCursors``, rows of the status table."""

    def get(self, name: str) -> Cursor:
        """The cursor named ``name``; the start (``Cursor(name)``) when none was written."""
        ...

    def put(self, cursor: Cursor) -> None: ...

    def starting_with(self, prefix: str) -> list[Cursor]:
        """Every cursor whose name starts with ``prefix``, by name."""
        ...


class BudgetBook(Protocol):
    """The fleet's request budgets as shared (``adapters.azure.budget_store.TableLeases``)."""

    def rows(self) -> list[BudgetState]: ...
