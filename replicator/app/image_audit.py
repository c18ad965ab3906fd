"""The walk of one image in DR, for ``verify`` and the reconcile sweep.

``Auditor.image`` checks, in the DR registry, the manifest a tag names, read by digest (a
few KiB, verified against its digest, which proves it readable and intact), every child
manifest, every config and layer by ``HEAD`` (no blob bytes pulled), and referrer parity:
the source's referrers of each manifest present in DR must be listed by DR (the referrers
API or the ``<alg>-<hex>`` fallback tag, through the ``ReferrerLister`` port), and each
is walked the same way, ``MAX_REFERRER_DEPTH`` deep. The walk reaches the registries only
through the ports (``replicator.app.ports``: ``RegistryClient.get_manifest`` and
``head_blob``, ``ReferrerLister``), so the reconcile sweep runs it on any runtime, the
in-memory fakes included. ``read_blob`` reads one blob end to end, streamed, and hashes
it (``verify --deep``, the CLI's OCI engine only). What is found is a ``Finding``
(``replicator.domain.integrity``): missing (absent, or bytes that do not hash to the
digest) or unreadable (an answer that tells nothing). Each ``repository@digest`` is
checked once per auditor (an LRU of ``MAX_SEEN``), however many images share it.
``audit_in_order`` walks a run of images a few at once and hands the results back in
order, for both: ``verify`` saves its cursor behind them, the sweep stops at a deferral.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import httpx

from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import transport_error
from replicator.app.ports import ReferrerLister, RegistryClients
from replicator.domain.errors import (
    DeferRequested,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from replicator.domain.integrity import BlobRef, Checked, Finding, Findings, Image
from replicator.domain.manifests import Manifest, blob_descriptors, children_of
from replicator.domain.reference import ImageRef
from replicator.domain.referrers import ListedReferrer

MAX_REFERRER_DEPTH = 8  # as the copy: referrers of referrers, so deep at most
MAX_SEEN = 200_000  # (repository, digest) pairs remembered as checked (an LRU)


class Tally(Protocol):
    """The progress display's interface (``replicator.cli.progress.Progress``)."""

    def advance(self, n: int = 1, *, nbytes: int = 0) -> None: ...

    def grow(self, n: int = 0, nbytes: int = 0) -> None: ...


@dataclass
class AuditResult:
    """What walking one image found (merged in order by the caller)."""

    missing: list[Finding] = field(default_factory=list)
    unreadable: list[Finding] = field(default_factory=list)
    blobs: list[BlobRef] = field(default_factory=list)  # present: candidates for the sample
    manifests: int = 0
    blob_heads: int = 0
    referrers: int = 0

    def findings(self) -> Findings:
        return Findings(tuple(self.missing), (), tuple(self.unreadable))

    def checked(self) -> Checked:
        return Checked(
            images=1, manifests=self.manifests, blobs=self.blob_heads, referrers=self.referrers
        )


class Auditor:
    """Walks images in ``target`` against ``source``; thread-safe (images run at once).
    ``referrers``: the listings to check referrer parity with (None: not checked; the
    sweep leaves it to referrer drift)."""

    def __init__(
        self,
        registries: RegistryClients,
        source: str,
        target: str,
        *,
        referrers: ReferrerLister | None = None,
    ) -> None:
        self.referrers = referrers
        self.source = source
        self.target = registries.client(target)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def image(self, image: Image) -> AuditResult:
        result = AuditResult()
        self._walk(result, Finding("manifest", image.repository, image.digest, image=image.digest))
        return result

    def _first(self, repository: str, digest: str) -> bool:
        """True the first time ``repository@digest`` is claimed (so it is checked once)."""
        key = (repository, digest)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            while len(self._seen) > MAX_SEEN:
                self._seen.popitem(last=False)
            return True

    def _walk(self, out: AuditResult, what: Finding, depth: int = 0) -> None:
        """Check the manifest ``what`` names in DR (the image, a child, or a ``referrer``
        DR lists), what it names and its referrers."""
        repo, digest, image = what.repository, str(what.digest), str(what.image)
        if not self._first(repo, digest):
            return
        manifest = self._manifest(out, what)
        if manifest is None:
            return
        out.manifests += 1
        try:
            children = children_of(manifest)
            blobs = blob_descriptors(manifest)
        except RegistryError as exc:
            out.unreadable.append(replace(what, reason=str(exc)))
            return
        for child in dict.fromkeys(children):
            self._walk(out, Finding("manifest", repo, child, None, digest, image), depth)
        for blob, size in dict.fromkeys(blobs):
            self._blob(out, repo, blob, size, image, digest)
        if self.referrers is not None and depth < MAX_REFERRER_DEPTH:
            self._referrers(out, repo, digest, image, depth)

    def _manifest(self, out: AuditResult, what: Finding) -> Manifest | None:
        """The manifest ``what`` names, read by digest from DR; else ``what`` recorded as
        missing (absent, or corrupt) or unreadable, and None."""
        assert what.digest is not None
        ref = ImageRef(self.target.host, what.repository, digest=what.digest)
        listed = "listed by DR, but its manifest is not there" if what.kind == "referrer" else ""
        try:
            return self.target.get_manifest(ref)
        except NotFoundError:
            out.missing.append(replace(what, reason=listed))
        except DigestMismatchError as exc:
            out.missing.append(replace(what, reason=f"corrupt: {exc}"))
        except DeferRequested:
            raise
        except RegistryError as exc:
            out.unreadable.append(replace(what, reason=str(exc)))
        return None

    def _blob(
        self, out: AuditResult, repo: str, digest: str, size: int, image: str, parent: str
    ) -> None:
        if not self._first(repo, digest):
            return
        try:
            found = self.target.head_blob(repo, digest)
        except DeferRequested:
            raise
        except RegistryError as exc:
            out.unreadable.append(
                Finding("blob", repo, digest, None, parent, image, reason=str(exc))
            )
            return
        if found is None:
            out.missing.append(Finding("blob", repo, digest, None, parent, image))
            return
        out.blob_heads += 1
        out.blobs.append(BlobRef(repo, digest, size, image))

    def _referrers(self, out: AuditResult, repo: str, subject: str, image: str, depth: int) -> None:
        wanted = self._listed(out, self.source, repo, subject, image)
        if not wanted:
            return
        there = self._listed(out, self.target.host, repo, subject, image)
        if there is None:
            return
        listed = {r.digest for r in there}
        for referrer in wanted:
            digest = referrer.digest
            what = Finding(
                "referrer", repo, digest, None, subject, image, artifact_type=referrer.artifact_type
            )
            out.referrers += 1
            if digest in listed:
                self._walk(out, what, depth + 1)
            else:
                out.missing.append(what)

    def _listed(
        self, out: AuditResult, host: str, repo: str, subject: str, image: str
    ) -> tuple[ListedReferrer, ...] | None:
        assert self.referrers is not None
        try:
            return self.referrers.referrers(host, repo, subject)
        except DeferRequested:
            raise
        except RegistryError as exc:
            side = "source" if host == self.source else "target"
            reason = f"the {side}'s referrers: {exc}"
            out.unreadable.append(
                Finding("referrer", repo, None, None, subject, image, reason=reason)
            )
            return None


def audit_in_order(
    auditor: Auditor, images: Iterable[Image], concurrency: int, *, name: str = "audit"
) -> Generator[tuple[Image, AuditResult], None, None]:
    """Each image and what walking it found, in the order given, at most ``concurrency``
    walked at once (twice that queued ahead, so a long run is never all submitted). A walk
    that raises (``DeferRequested``: the pacer's wait is too long) raises here in its place,
    after every image before it; closing the iterator drops what was queued."""
    workers = max(1, concurrency)
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    pending: deque[tuple[Image, Future[AuditResult]]] = deque()
    feed = iter(images)
    try:
        while True:
            while len(pending) < 2 * workers and (image := next(feed, None)) is not None:
                pending.append((image, pool.submit(auditor.image, image)))
            if not pending:
                return
            image, future = pending.popleft()
            yield image, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- deep: read a blob end to end (the OCI engine's streamed GET) -------------------------
def read_blob(
    registries: Registries, target: str, blob: BlobRef, tally: Tally | None = None
) -> tuple[Finding | None, int]:
    """Stream ``blob`` from ``target`` and hash it: ``(a finding or None, bytes read)``;
    ``-1`` bytes when it could not be read (the finding is then unreadable)."""
    client = registries.client(target)
    reference = f"{blob.repository}@{blob.digest}"

    def attempt() -> int:
        algorithm, _, expected = blob.digest.partition(":")
        hasher = hashlib.new(algorithm)
        total = 0
        with client.open_blob(blob.repository, blob.digest) as response:
            try:
                for chunk in response.iter_raw():
                    hasher.update(chunk)
                    total += len(chunk)
                    if tally is not None:
                        tally.advance(0, nbytes=len(chunk))
            except httpx.TransportError as exc:
                raise transport_error(exc, "GET blob", reference) from None
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != blob.digest or (blob.size >= 0 and total != blob.size):
            raise DigestMismatchError(
                f"{total} bytes hashing to {actual} (expected {blob.size} bytes, {expected})",
                operation="GET blob",
                reference=reference,
            )
        return total

    try:
        return None, registries.retry.run(f"verify blob {reference}", attempt)
    except DigestMismatchError as exc:
        return _deep_finding(blob, f"corrupt: {exc}"), 0
    except NotFoundError:
        return _deep_finding(blob, "gone when read"), 0
    except DeferRequested:
        raise
    except RegistryError as exc:
        return _deep_finding(blob, str(exc)), -1


def _deep_finding(blob: BlobRef, reason: str) -> Finding:
    return Finding("blob", blob.repository, blob.digest, image=blob.image, reason=reason)
