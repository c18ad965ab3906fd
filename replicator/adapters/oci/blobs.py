"""Copy one blob: skip it, mount it, or stream it in constant memory, digest verified.

The stream holds back its last chunk until the bytes read hash to the expected digest, so
a lying source aborts the upload before the target could commit anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import transport_error
from replicator.domain.errors import DigestMismatchError

CHUNK = 1024 * 1024
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BlobResult:
    digest: str
    action: str  # "skipped" | "mounted" | "copied"
    size: int = 0


@dataclass(frozen=True)
class BlobCopy:
    """``digest`` (``size`` bytes, -1 if unknown): ``source/src_repo`` to ``target/dst_repo``."""

    source: RegistryClient
    src_repo: str
    target: RegistryClient
    dst_repo: str
    digest: str
    size: int = -1


def copy_blob(
    registries: Registries, job: BlobCopy, progress: Progress | None = None
) -> BlobResult:
    """Skip what the target has, mount what it holds elsewhere, stream the rest.

    One retry budget for the whole blob: its idempotent steps (the HEAD, starting an
    upload, the source GET) are retried where they fail, and the whole attempt (a new
    upload session, the source read again) only when the stream broke or its PUT failed,
    every retry drawn from the same budget (``RetryPolicy.operation``)."""
    with registries.retry.operation(f"copy blob {job.digest}"):
        return _copy_blob(registries, job, progress)


def _copy_blob(registries: Registries, job: BlobCopy, progress: Progress | None) -> BlobResult:
    target = job.target
    if target.head_blob(job.dst_repo, job.digest) is not None:
        registries.saw_blob(target.host, job.dst_repo, job.digest)
        return BlobResult(job.digest, "skipped", max(job.size, 0))
    location = None
    for home in registries.blob_homes(target.host, job.digest):
        if home == job.dst_repo:
            continue
        mounted, location = target.start_upload(job.dst_repo, mount=job.digest, source=home)
        if mounted:
            registries.saw_blob(target.host, job.dst_repo, job.digest)
            return BlobResult(job.digest, "mounted", max(job.size, 0))
        break  # the mount failed: its upload session serves for a normal upload

    def attempt() -> int:
        nonlocal location
        session, location = location, None
        return _stream(job, session or target.start_upload(job.dst_repo)[1], progress)

    size = registries.retry.run(f"copy blob {job.digest}", attempt)
    registries.saw_blob(target.host, job.dst_repo, job.digest)
    return BlobResult(job.digest, "copied", size)


def _stream(job: BlobCopy, location: str, progress: Progress | None) -> int:
    with job.source.open_blob(job.src_repo, job.digest) as response:
        declared = int(response.headers.get("Content-Length") or job.size)
        if job.size >= 0 and declared != job.size:
            raise DigestMismatchError(
                f"source blob {job.digest} is {declared} bytes, its descriptor says {job.size}",
                operation="GET blob",
                reference=f"{job.src_repo}@{job.digest}",
            )
        body = _verified(response, job, progress)
        job.target.finish_upload(
            job.dst_repo, location, job.digest, body, declared if declared >= 0 else None
        )
    return max(declared, 0)


def _verified(
    response: httpx.Response, job: BlobCopy, progress: Progress | None
) -> Iterator[bytes]:
    algorithm, _, expected = job.digest.partition(":")
    hasher = hashlib.new(algorithm)
    held: bytes | None = None
    try:
        for chunk in response.iter_raw():
            if not chunk:
                continue
            hasher.update(chunk)
            if held is not None:
                yield held
                if progress:
                    progress(len(held))
            held = chunk
    except httpx.TransportError as exc:
        raise transport_error(exc, "GET blob", f"{job.src_repo}@{job.digest}") from None
    if hasher.hexdigest() != expected:
        raise DigestMismatchError(
            f"source blob content has digest {algorithm}:{hasher.hexdigest()}, not {job.digest}",
            operation="GET blob",
            reference=f"{job.src_repo}@{job.digest}",
        )
    if held is not None:
        yield held
        if progress:
            progress(len(held))
