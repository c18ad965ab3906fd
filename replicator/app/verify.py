"""The integrity audit of a DR copy: ``acr-replicator verify`` and the reconcile sweep.

``verify`` lists both sides, checks every in-scope tag (``replicator.domain.integrity``),
then walks each image in step by tag in DR (``replicator.app.image_audit``: manifests by
digest, every child, config and layer by ``HEAD``, referrer parity), a few at once, in
order; ``--deep`` then reads a random sample of the blobs seen end to end, streamed, and
checks their digests.

Pacing: every request goes through the registry client's retry layer and its ``Pacer``,
which names the bucket from the request (``read``; ``referrers`` for a referrers listing:
``replicator.adapters.budget_pacer`` paces those at the ``referrers`` budget and the other
reads at what is left of ``read``, reference section 3), so the audit adds no pacing of
its own: build the ``Registries`` with the budget pacer (the CLI and the runtime do).
A ``CursorStore`` keeps where an interrupted audit stopped (``FileCursor``: written
atomically), so it goes on there.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from replicator.adapters.oci.listing import Listing, RegistryLister
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.adapters.oci.registries import Registries
from replicator.app.image_audit import Auditor, AuditResult, Tally, audit_in_order, read_blob
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

SAVE_EVERY = 25  # images between cursor writes


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
    auditor = Auditor(registries, source, target, referrers=RegistryReferrers(registries))
    run = _Run(auditor, options, cursor, store, tally, deep=partial(read_blob, registries, target))
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
        *,
        deep: Callable[[BlobRef, Tally | None], tuple[Finding | None, int]],
    ) -> None:
        self.auditor, self.options, self.cursor = auditor, options, cursor
        self.read_blob = deep
        self.store, self.tally = store, tally
        self.sample = Sample(
            options.sample if options.deep else 0,
            options.seed,
            cursor.sample_seen,
            list(cursor.sample),
        )

    def images(self, images: Sequence[Image]) -> Cursor:
        """Walk the ``images`` past the cursor, at most ``concurrency`` at once, merging
        results in order so the cursor always marks a finished prefix."""
        todo = remaining(images, self.cursor.after)
        if self.tally is not None:
            self.tally.grow(len(todo))
        walk = audit_in_order(self.auditor, todo, self.options.concurrency, name="verify")
        try:
            with closing(walk):
                for done, (image, result) in enumerate(walk, 1):
                    self._merge(image, result)
                    if done % SAVE_EVERY == 0:
                        self._save()
        finally:
            self._save()
        return self.cursor

    def _merge(self, image: Image, result: AuditResult) -> None:
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
                finding, read = self.read_blob(blob, self.tally)
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
