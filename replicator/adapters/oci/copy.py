"""``ImageCopier``: copy an image, digest for digest, children first and the tag last.

Order: blobs before the manifests naming them, children before their index, the index by
digest, then the referrers of every manifest (and their own referrers), and only then the
tag, so no reader ever sees a tag pointing at an incomplete image. A copy by digest leaves
no tag. Manifests are pushed byte for byte.

A repair (``repair=True``) takes nothing the target holds on trust: the whole tree is read
from the source even where the target has the manifest, every config and layer is checked
(a HEAD, then copied when it is missing), every child manifest and referrer too, the
missing manifests are pushed after the blobs they name (children first), and the tag, if
any, only after that. What it restored is in the report (``extra["repaired"]``).

Round trips are what a copy across regions waits on, so independent requests go together,
at most ``concurrency`` at once: the platforms of an index (a HEAD on the target, a GET on
the source), the blobs, the referrer listings of every subject after the first (which
learns whether the registry has the referrers API), and the referrers themselves.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from replicator.adapters.oci.blobs import BlobCopy, copy_blob
from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.referrers import (
    Referrers,
    fallback_tag,
    list_referrers,
    update_fallback,
)
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import DigestMismatchError, NotFoundError
from replicator.domain.manifests import OCI_INDEX, Manifest, blob_descriptors, child_descriptors
from replicator.domain.model import CopyReport
from replicator.domain.planning import is_referrers_tag
from replicator.domain.reference import ImageRef

log = logging.getLogger(__name__)
Progress = Callable[..., None]
T = TypeVar("T")
R = TypeVar("R")
MAX_REFERRER_DEPTH = 8


@dataclass
class _Tally:
    manifests: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes: int = 0
    referrers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def blob(self, action: str, size: int) -> None:
        with self.lock:
            if action == "copied":
                self.blobs_copied += 1
                self.bytes += size
            elif action == "mounted":
                self.blobs_mounted += 1
            else:
                self.blobs_skipped += 1

    def manifest(self) -> None:
        with self.lock:
            self.manifests += 1

    def referrer(self) -> None:
        with self.lock:
            self.referrers += 1

    def report(self, digest: str, already: bool = False) -> CopyReport:
        return CopyReport(
            digest=digest,
            manifests_copied=self.manifests,
            blobs_copied=self.blobs_copied,
            blobs_skipped=self.blobs_skipped,
            blobs_mounted=self.blobs_mounted,
            bytes_copied=self.bytes,
            referrers_copied=self.referrers,
            already_present=already,
        )


@dataclass
class _Copy:
    """One copy in progress: both ends and what it did."""

    source: RegistryClient
    src_repo: str
    target: RegistryClient
    dst_repo: str
    tally: _Tally = field(default_factory=_Tally)
    done: set[str] = field(default_factory=set)  # manifest digests now in the target
    repair: bool = False  # descend into what the target holds, check every blob
    present: set[str] = field(default_factory=set)  # (repair) manifests the target held

    def src(self, reference: str) -> ImageRef:
        return _ref(self.source.host, self.src_repo, reference)

    def dst(self, reference: str) -> ImageRef:
        return _ref(self.target.host, self.dst_repo, reference)


def _ref(host: str, repository: str, reference: str) -> ImageRef:
    if ":" in reference:
        return ImageRef(host, repository, digest=reference)
    return ImageRef(host, repository, tag=reference)


def unlist_referrer(registries: Registries, ref: ImageRef) -> str | None:
    """Before ``ref`` (a manifest, by digest) is deleted: if it is a referrer and its
    registry has no referrers API, rewrite its subject's referrers tag without it (the
    tag is the client's to keep, "Pushing Manifests with Subject"; a registry with the
    API forgets a deleted manifest itself). The subject whose index was rewritten, or
    None. Called before the delete, so a retry still finds the manifest to read."""
    client = registries.client(ref.registry)
    try:
        manifest = client.get_manifest(ref)
    except NotFoundError:
        return None
    subject = manifest.subject
    if subject is None:
        return None
    found = list_referrers(registries, client, ref.repository, subject)
    if registries.referrers_api.get(client.host) is not False or found.fallback is None:
        return None
    if manifest.digest not in found.digests:
        return None
    kept = [d for d in found.descriptors if d.get("digest") != manifest.digest]
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": kept}
    index = Manifest.from_bytes(json.dumps(body, separators=(",", ":")).encode(), OCI_INDEX)
    client.put_manifest(ImageRef(client.host, ref.repository, fallback_tag(subject)), index)
    log.info("%s left the referrers tag of %s (%d still listed)", ref, subject, len(kept))
    return subject


class ImageCopier:
    """Implements ``replicator.app.ports.Copier`` over OCI registries."""

    def __init__(
        self, registries: Registries, *, concurrency: int = 8, progress: Progress | None = None
    ) -> None:
        self.registries = registries
        self.concurrency = max(1, concurrency)
        self.progress = progress

    def copy_image(self, src: ImageRef, dst: ImageRef, *, repair: bool = False) -> CopyReport:
        """Copy ``src`` (tag or digest) to ``dst``; tag ``dst`` if it names a tag.
        ``repair``: check and complete what ``dst`` holds too (see the module)."""
        job = self._job(src, dst)
        job.repair = repair
        top = job.source.get_manifest(src)
        if dst.digest is not None and dst.digest != top.digest:
            raise DigestMismatchError(
                f"{src} is {top.digest}, not {dst.digest}", operation="copy", reference=str(dst)
            )
        there = job.target.head_manifest(
            dst.with_digest(None) if dst.tag else dst.with_digest(top.digest)
        )
        in_place = there is not None and there.digest == top.digest
        if dst.tag is not None and is_referrers_tag(dst.tag) and self._has_api(job, dst.tag):
            return self._copy_listed(job, top)
        if repair:
            return self._repair(job, top, dst, in_place)
        if in_place and self._referrers_in_step(job, top):
            if top.subject is not None:  # present, and listed where the target lists it
                self._list_under_subject(job, top, top.subject)
            self._note("done", digest=top.digest, already=True)
            return job.tally.report(top.digest, already=True)
        if in_place:
            manifests = [top.digest] + [str(d.get("digest")) for d in child_descriptors(top)]
            job.done.update(manifests)
        else:
            manifests = self._copy_tree(job, top)
        self._complete(job, top, dst, manifests, in_place)
        self._note("done", digest=top.digest, already=False)
        return job.tally.report(top.digest)

    def _repair(self, job: _Copy, top: Manifest, dst: ImageRef, in_place: bool) -> CopyReport:
        """The whole tree checked and completed (blobs, then the missing manifests), its
        referrers the same way, the subject's index, and the tag last."""
        if in_place or (dst.tag is not None and self._holds(job, top.digest)):
            job.present.add(top.digest)
        manifests = self._copy_tree(job, top)
        self._complete(job, top, dst, manifests, in_place)
        tally = job.tally
        blobs = tally.blobs_copied + tally.blobs_mounted
        restored = f"repaired: {tally.manifests} manifests, {blobs} blobs restored"
        log.info("%s %s", dst, restored)
        self._note("done", digest=top.digest, already=False)
        return replace(tally.report(top.digest), extra={"repaired": restored})

    def _complete(
        self, job: _Copy, top: Manifest, dst: ImageRef, manifests: list[str], in_place: bool
    ) -> None:
        """After the tree: its referrers, the subject's index, and the tag last."""
        self._copy_referrers(job, manifests, depth=0)
        if top.subject is not None:
            self._list_under_subject(job, top, top.subject)
        if dst.tag is not None and not in_place:
            job.target.put_manifest(dst.with_digest(None), top)

    def _holds(self, job: _Copy, digest: str) -> bool:
        return job.target.head_manifest(job.dst(digest)) is not None

    def copy_referrers(self, src: ImageRef, dst: ImageRef) -> int:
        """Only the referrers of ``src`` and its children (the image itself is in the target)."""
        job = self._job(src, dst)
        top = job.source.get_manifest(src)
        digests = [top.digest] + [str(d["digest"]) for d in child_descriptors(top)]
        job.done.update(digests)
        self._copy_referrers(job, digests, depth=0)
        return job.tally.referrers

    def _job(self, src: ImageRef, dst: ImageRef) -> _Copy:
        return _Copy(
            self.registries.client(src.registry),
            src.repository,
            self.registries.client(dst.registry),
            dst.repository,
        )

    # -- the image tree ------------------------------------------------------------------
    def _copy_tree(self, job: _Copy, top: Manifest) -> list[str]:
        """Copy ``top`` and what it names into the target (by digest); its manifest digests."""
        ordered: list[Manifest] = []  # children before parents
        every: list[str] = []
        self._collect(job, top, ordered, every)
        blobs: dict[str, int] = {}
        for manifest in ordered:
            blobs.update(blob_descriptors(manifest))
        self._copy_blobs(job, blobs)
        for manifest in ordered:
            if manifest.digest in job.present:  # (repair) held already: not pushed again
                job.done.add(manifest.digest)
            else:
                self._put(job, manifest)
        return every

    def _put(self, job: _Copy, manifest: Manifest) -> None:
        """PUT by digest; a manifest with a subject tells whether the target indexes referrers."""
        _, handled = job.target.push_manifest(job.dst(manifest.digest), manifest)
        if manifest.subject is not None and handled:  # no OCI-Subject: ask the API itself
            self.registries.referrers_api[job.target.host] = True
        job.done.add(manifest.digest)
        job.tally.manifest()

    def _collect(
        self, job: _Copy, manifest: Manifest, ordered: list[Manifest], every: list[str]
    ) -> None:
        """Add ``manifest`` and the children the target lacks to ``ordered``, children first.

        The children are looked up at once (a HEAD on the target, then a GET on the source
        for the missing ones), a round trip per index instead of two per platform."""
        every.append(manifest.digest)
        children = [str(child.get("digest")) for child in child_descriptors(manifest)]
        children = [d for d in dict.fromkeys(children) if d not in every]
        found = self._each(lambda digest: self._missing_child(job, digest), children)
        for digest, child in zip(children, found, strict=True):
            if digest in every:
                continue
            if child is None:
                every.append(digest)
                job.done.add(digest)
                continue
            self._collect(job, child, ordered, every)
        ordered.append(manifest)

    def _missing_child(self, job: _Copy, digest: str) -> Manifest | None:
        """The child from the source, or None when the target already holds it (a repair
        reads it all the same, to check what it names, and notes it held)."""
        if self._holds(job, digest):
            if not job.repair:
                return None
            with job.tally.lock:
                job.present.add(digest)
        return job.source.get_manifest(job.src(digest))

    def _each(self, work: Callable[[T], R], items: list[T]) -> list[R]:
        """``work`` on every item, at most ``concurrency`` at once; results in order."""
        workers = min(self.concurrency, len(items))
        if workers <= 1:
            return [work(item) for item in items]
        # each item in a copy of this thread's context: an open retry budget carries over
        runs = [(contextvars.copy_context(), item) for item in items]
        with ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
            return list(pool.map(lambda run: run[0].run(work, run[1]), runs))

    def _copy_blobs(self, job: _Copy, blobs: dict[str, int]) -> None:
        if not blobs:
            return
        self._note("blobs", count=len(blobs), total=sum(max(s, 0) for s in blobs.values()))

        def one(item: tuple[str, int]) -> None:
            digest, size = item
            self.registries.saw_blob(job.source.host, job.src_repo, digest)
            plan = BlobCopy(job.source, job.src_repo, job.target, job.dst_repo, digest, size)
            result = copy_blob(self.registries, plan, self._bytes)
            job.tally.blob(result.action, result.size)
            self._note("blob", digest=digest, action=result.action, size=result.size)

        self._each(one, sorted(blobs.items(), key=lambda item: -item[1]))  # largest first

    # -- referrers -----------------------------------------------------------------------
    def _copy_referrers(self, job: _Copy, subjects: list[str], depth: int) -> None:
        """The referrers of every subject, the subjects (and their referrers) at once."""
        if depth >= MAX_REFERRER_DEPTH:
            return
        listed = zip(subjects, self._list_all(job.source, job.src_repo, subjects), strict=True)
        todo = [(subject, found) for subject, found in listed if found.descriptors]

        def one(item: tuple[str, Referrers]) -> None:
            subject, found = item
            copied = self._each(lambda d: self._copy_referrer(job, d, depth), [*found.descriptors])
            if not all(copied):  # dangling entries stay out of the target's index
                found = Referrers(
                    tuple(d for d, ok in zip(found.descriptors, copied, strict=True) if ok)
                )
            if self.registries.referrers_api.get(job.target.host) is None:
                list_referrers(self.registries, job.target, job.dst_repo, subject)  # probe
            if self.registries.referrers_api.get(job.target.host) is False:  # a 404: no API
                update_fallback(job.target, job.dst_repo, subject, found)

        self._each(one, todo)

    def _copy_referrer(self, job: _Copy, descriptor: dict[str, object], depth: int) -> bool:
        """Copy one referrer (and its own referrers); False if the source lost it."""
        digest = str(descriptor.get("digest"))
        if digest not in job.done:
            held = self._holds(job, digest)
            if held and job.repair:
                with job.tally.lock:
                    job.present.add(digest)
            if not held or job.repair:
                try:
                    manifest = job.source.get_manifest(job.src(digest))
                except NotFoundError:
                    log.warning("referrer %s of %s is listed but gone", digest, job.src_repo)
                    return False
                self._copy_tree(job, manifest)
                if not held:
                    job.tally.referrer()
            job.done.add(digest)
        self._copy_referrers(job, [digest], depth + 1)
        return True

    def _has_api(self, job: _Copy, fallback: str) -> bool:
        """Whether the target has the referrers API (asked once, by listing the subject
        that the referrers tag ``fallback`` names)."""
        if self.registries.referrers_api.get(job.target.host) is None:
            subject = fallback.replace("-", ":", 1)
            list_referrers(self.registries, job.target, job.dst_repo, subject)
        return self.registries.referrers_api.get(job.target.host) is True

    def _copy_listed(self, job: _Copy, index: Manifest) -> CopyReport:
        """A referrers tag's index, into a registry with the API: the referrers it lists are
        copied (the API lists them), the tag never written (spec 1.1, "Referrers Tag
        Schema" is for registries without the API)."""
        self._each(lambda d: self._copy_referrer(job, d, 0), [*child_descriptors(index)])
        self._note("done", digest=index.digest, already=False)
        return job.tally.report(index.digest)

    def _list_under_subject(self, job: _Copy, referrer: Manifest, subject: str) -> None:
        """A referrer copied on its own (its subject's copy may have run before it, or may
        run later): on a target without the referrers API, its subject's referrers tag
        lists it ("Pushing Manifests with Subject": no OCI-Subject, so the client keeps the
        tag). A target with the API listed it when it was pushed."""
        if self.registries.referrers_api.get(job.target.host) is None:
            list_referrers(self.registries, job.target, job.dst_repo, subject)  # probe
        if self.registries.referrers_api.get(job.target.host) is False:
            update_fallback(job.target, job.dst_repo, subject, Referrers((referrer.descriptor(),)))

    def _referrers_in_step(self, job: _Copy, top: Manifest) -> bool:
        """Whether the target lists every source referrer of the image's manifests."""
        subjects = [top.digest] + [str(d.get("digest")) for d in child_descriptors(top)]
        wanted = dict(
            zip(subjects, self._list_all(job.source, job.src_repo, subjects), strict=True)
        )
        subjects = [s for s in subjects if wanted[s].descriptors]
        there = self._list_all(job.target, job.dst_repo, subjects, fallback_first=True)
        return all(wanted[s].digests <= t.digests for s, t in zip(subjects, there, strict=True))

    def _list_all(
        self, client: RegistryClient, repository: str, subjects: list[str], **options: bool
    ) -> list[Referrers]:
        """The referrers of each subject; the first alone (it learns whether the registry
        has the referrers API), the others at once."""
        if not subjects:
            return []

        def listed(subject: str) -> Referrers:
            return list_referrers(self.registries, client, repository, subject, **options)

        return [listed(subjects[0]), *self._each(listed, subjects[1:])]

    # -- progress ------------------------------------------------------------------------
    def _note(self, event: str, **fields: object) -> None:
        if self.progress is not None:
            self.progress(event, **fields)

    def _bytes(self, count: int) -> None:
        if self.progress is not None:
            self.progress("bytes", count=count)
