"""The integrity audit of a DR copy: ``acr-replicator verify`` and the reconcile sweep.

``verify`` lists both sides, checks every in-scope tag (``replicator.domain.integrity``),
then walks each image in step by tag, in DR: its manifests read by digest (a few KiB,
verified against their digest, which proves them readable), every child manifest, and
every config and layer by ``HEAD`` (no blob bytes pulled); and referrer parity: the
source's referrers of each manifest present in DR must be listed by DR (the referrers
API or the ``<alg>-<hex>`` fallback tag, ``replicator.adapters.oci.referrers``), and each
is walked the same way. ``--deep`` then reads a random sample of the blobs seen end to
end, streamed, and checks their digests.

Pacing: every request goes through the registry client's retry layer and its ``Pacer``,
which names the bucket from the request (``read``; ``referrers`` for a referrers listing:
``replicator.adapters.budget_pacer`` paces those at the ``referrers`` budget and the other
reads at what is left of ``read``, reference section 3), so the audit adds no pacing of
its own: build the ``Registries`` with the budget pacer (the CLI and the runtime do).
A ``CursorStore`` keeps where an interrupted audit stopped (``FileCursor``: written
atomically), so it goes on there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.listing import Listing, RegistryLister
from replicator.adapters.oci.referrers import Referrers, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import transport_error
from replicator.domain.errors import (
    DeferRequested,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from replicator.domain.filters import Filters, may_hold_allowed
from replicator.domain.integrity import (
    BlobRef,
    Checked,
    Cursor,
    Finding,
    Findings,
    Image,
    Sample,
    TagCheck,
    VerifyReport,
    check_tags,
    remaining,
)
from replicator.domain.manifests import Manifest, blob_descriptors, children_of
from replicator.domain.reference import ImageRef

MAX_REFERRER_DEPTH = 8  # as the copy: referrers of referrers, so deep at most
MAX_SEEN = 200_000  # (repository, digest) pairs remembered as checked (an LRU)
SAVE_EVERY = 25  # images between cursor writes


class Tally(Protocol):
    """The progress display's interface (``replicator.cli.progress.Progress``)."""

    def advance(self, n: int = 1, *, nbytes: int = 0) -> None: ...

    def grow(self, n: int = 0, nbytes: int = 0) -> None: ...


class CursorStore(Protocol):
    def load(self) -> Cursor | None: ...

    def save(self, cursor: Cursor) -> None: ...

    def clear(self) -> None: ...


@dataclass(frozen=True)
class VerifyOptions:
    deep: bool = False
    sample: int = 10  # blobs read end to end with ``deep``
    seed: int | None = None  # of the sample (tests); None: a new one each run
    concurrency: int = 8  # images walked at once


class CursorMismatch(ValueError):
    """A saved cursor that belongs to another audit (other registries, filters or depth)."""


# -- the walk of one image ------------------------------------------------------------------
@dataclass
class _Result:
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
    ``referrers``: whether to check referrer parity too (the sweep leaves it to referrer
    drift)."""

    def __init__(
        self, registries: Registries, source: str, target: str, *, referrers: bool = True
    ) -> None:
        self.registries = registries
        self.referrers = referrers
        self.source = registries.client(source)
        self.target = registries.client(target)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def image(self, image: Image) -> _Result:
        result = _Result()
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

    def _walk(self, out: _Result, what: Finding, depth: int = 0) -> None:
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
        if self.referrers and depth < MAX_REFERRER_DEPTH:
            self._referrers(out, repo, digest, image, depth)

    def _manifest(self, out: _Result, what: Finding) -> Manifest | None:
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
        self, out: _Result, repo: str, digest: str, size: int, image: str, parent: str
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

    def _referrers(self, out: _Result, repo: str, subject: str, image: str, depth: int) -> None:
        wanted = self._listed(out, self.source, repo, subject, image)
        if wanted is None or not wanted.descriptors:
            return
        there = self._listed(out, self.target, repo, subject, image)
        if there is None:
            return
        for descriptor in wanted.descriptors:
            digest = str(descriptor.get("digest"))
            kind = descriptor.get("artifactType")
            what = Finding(
                "referrer",
                repo,
                digest,
                None,
                subject,
                image,
                artifact_type=kind if isinstance(kind, str) else None,
            )
            out.referrers += 1
            if digest in there.digests:
                self._walk(out, what, depth + 1)
            else:
                out.missing.append(what)

    def _listed(
        self, out: _Result, client: RegistryClient, repo: str, subject: str, image: str
    ) -> Referrers | None:
        try:
            return list_referrers(self.registries, client, repo, subject)
        except DeferRequested:
            raise
        except RegistryError as exc:
            side = "source" if client is self.source else "target"
            reason = f"the {side}'s referrers: {exc}"
            out.unreadable.append(
                Finding("referrer", repo, None, None, subject, image, reason=reason)
            )
            return None

    # -- deep: read a blob end to end ---------------------------------------------------
    def read_blob(self, blob: BlobRef, tally: Tally | None = None) -> tuple[Finding | None, int]:
        """Stream ``blob`` from DR and hash it: ``(a finding or None, bytes read)``."""
        reference = f"{blob.repository}@{blob.digest}"

        def attempt() -> int:
            algorithm, _, expected = blob.digest.partition(":")
            hasher = hashlib.new(algorithm)
            total = 0
            with self.target.open_blob(blob.repository, blob.digest) as response:
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
            return None, self.registries.retry.run(f"verify blob {reference}", attempt)
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


# -- listing both sides ---------------------------------------------------------------------
def list_side(registries: Registries, host: str, filters: Filters, concurrency: int) -> Listing:
    lister = RegistryLister(registries.client(host), host, concurrency=concurrency)
    return lister.listing(None, filters.allows, lambda r: may_hold_allowed(filters, r))


def check_sides(
    registries: Registries, source: str, target: str, filters: Filters, concurrency: int = 8
) -> TagCheck:
    """Both sides listed at once and every in-scope tag checked."""
    with ThreadPoolExecutor(2, thread_name_prefix="verify-list") as pool:
        have, want = pool.map(
            lambda host: list_side(registries, host, filters, concurrency), [source, target]
        )
    return check_tags(
        have.entries,
        want.entries,
        filters,
        source_unread=_why_unread(have),
        target_unread=_why_unread(want),
    )


def _why_unread(listing: Listing) -> dict[str, str]:
    """Each repository the listing left unread (``""``: the catalog), with its error line."""
    why: dict[str, str] = {}
    for name in listing.failed:
        marker = f"{listing.registry}: the catalog" if not name else f"{listing.registry}/{name}: "
        lines = [e for e in listing.errors if e.startswith(marker)]
        why[name] = lines[0] if lines else f"{listing.registry}: could not be listed"
    return why


# -- the audit ------------------------------------------------------------------------------
def scope_of(source: str, target: str, filters: Filters, options: VerifyOptions) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "include": list(filters.include),
        "exclude": list(filters.exclude),
        "deep": options.deep,
        "sample": options.sample if options.deep else 0,
        "seed": options.seed,
    }


def verify(
    registries: Registries,
    source: str,
    target: str,
    filters: Filters,
    options: VerifyOptions = VerifyOptions(),
    *,
    store: CursorStore | None = None,
    tally: Tally | None = None,
) -> VerifyReport:
    """Audit ``target`` against ``source`` (see the module); resumable through ``store``."""
    scope = scope_of(source, target, filters, options)
    cursor = store.load() if store is not None else None
    if cursor is not None and dict(cursor.scope) != scope:
        raise CursorMismatch("the saved cursor is for another audit (registries, filters, --deep)")
    cursor = cursor or Cursor(scope)
    check = check_sides(registries, source, target, filters, options.concurrency)
    run = _Run(Auditor(registries, source, target), options, cursor, store, tally)
    cursor = run.images(check.images)
    if options.deep:
        cursor = run.deep()
    if store is not None:
        store.clear()
    found = check.findings.plus(cursor.findings)
    return VerifyReport(found, cursor.checked.plus(Checked(tags=check.tags)))


class _Run:
    """One run over a list of images, saving the cursor as it goes."""

    def __init__(
        self,
        auditor: Auditor,
        options: VerifyOptions,
        cursor: Cursor,
        store: CursorStore | None,
        tally: Tally | None,
    ) -> None:
        self.auditor, self.options, self.cursor = auditor, options, cursor
        self.store, self.tally = store, tally
        self.sample = Sample(
            options.sample if options.deep else 0,
            options.seed,
            cursor.sample_seen,
            list(cursor.sample),
        )

    def images(self, images: Sequence[Image], *, resume: bool = True) -> Cursor:
        """Walk ``images`` (those past the cursor when ``resume``), at most ``concurrency``
        at once, merging results in order so the cursor always marks a finished prefix."""
        todo = remaining(images, self.cursor.after) if resume else list(images)
        if self.tally is not None:
            self.tally.grow(len(todo))
        window = max(1, self.options.concurrency) * 2
        pool = ThreadPoolExecutor(max(1, self.options.concurrency), thread_name_prefix="verify")
        pending: deque[tuple[Image, Future[_Result]]] = deque()
        feed = iter(todo)
        done = 0
        try:
            while True:
                while len(pending) < window and (image := next(feed, None)) is not None:
                    pending.append((image, pool.submit(self.auditor.image, image)))
                if not pending:
                    break
                image, future = pending.popleft()
                self._merge(image, future.result())
                done += 1
                if done % SAVE_EVERY == 0:
                    self._save()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._save()
        return self.cursor

    def _merge(self, image: Image, result: _Result) -> None:
        for blob in result.blobs:
            self.sample.offer(blob)
        self.cursor = self.cursor.advance(
            after=image.key,
            findings=self.cursor.findings.plus(result.findings()),
            checked=self.cursor.checked.plus(result.checked()),
            sample_seen=self.sample.seen,
            sample=tuple(self.sample.items),
        )
        if self.tally is not None:
            self.tally.advance()

    def deep(self) -> Cursor:
        todo = list(self.cursor.sample)[self.cursor.deep_done :]
        if self.tally is not None:
            self.tally.grow(len(todo), sum(max(b.size, 0) for b in todo))
        try:
            for blob in todo:
                finding, read = self.auditor.read_blob(blob, self.tally)
                found = Findings()
                if finding is not None and read < 0:
                    found = Findings(unreadable=(finding,))
                elif finding is not None:
                    found = Findings(missing=(finding,))
                self.cursor = self.cursor.advance(
                    deep_done=self.cursor.deep_done + 1,
                    findings=self.cursor.findings.plus(found),
                    checked=self.cursor.checked.plus(
                        Checked(deep_blobs=1 if read >= 0 else 0, deep_bytes=max(read, 0))
                    ),
                )
                if self.tally is not None:
                    self.tally.advance()
        finally:
            self._save()
        return self.cursor

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.cursor)


# -- the cursor file ------------------------------------------------------------------------
class FileCursor:
    """A cursor in a JSON file, written atomically (a temporary file in the same directory,
    flushed to disk, then renamed over the old one): an interruption at any moment leaves
    the previous cursor or the new one, never half of one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Cursor | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CursorMismatch(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return Cursor.from_dict(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise CursorMismatch(f"{self.path} is not a verify cursor: {exc}") from None

    def save(self, cursor: Cursor) -> None:
        directory = self.path.parent
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(cursor.to_dict(), handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def findings_by_image(findings: Iterable[Finding]) -> Mapping[tuple[str, str], list[Finding]]:
    """Findings grouped by the image (repository, top digest) they belong to."""
    grouped: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        if finding.image is not None:
            grouped.setdefault((finding.repository, finding.image), []).append(finding)
    return grouped
