"""``RegistryClient``: one registry host over the OCI distribution API.

Every request goes through ``request``: authenticated (challenges answered, token
cached per scope, renewed on 401) and retried on 429/5xx/timeouts/resets with backoff. Manifests are
fetched with the right ``Accept``, verified against their digest and pushed byte for byte.
Blob primitives (HEAD, streaming GET, upload, mount) are what ``replicator.adapters.oci.blobs``
copies with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from replicator.adapters.oci.auth import Authenticator, scopes_for
from replicator.adapters.oci.transport import (
    RetryPolicy,
    bounded_error,
    error_body,
    error_codes,
    error_for,
    expect,
    is_transient_status,
    read_limited,
    retry_after,
    transport_error,
)
from replicator.domain.errors import NotFoundError, PermanentRegistryError, TransientRegistryError
from replicator.domain.manifests import ACCEPT, MAX_MANIFEST_BYTES, Manifest
from replicator.domain.model import Descriptor
from replicator.domain.reference import ImageRef

__all__ = ["RegistryClient", "read_limited", "scopes_for"]

Body = bytes | Iterable[bytes] | None
UNSEEN_BLOB = "MANIFEST_BLOB_UNKNOWN"
MAX_BODY_BYTES = MAX_MANIFEST_BYTES  # a body read whole (not streamed): upload answers, pings
MAX_REDIRECTS = 5


class RegistryClient:
    """One registry host. Implements ``replicator.app.ports.RegistryClient``."""

    def __init__(
        self, host: str, *, scheme: str, http: httpx.Client, auth: Authenticator, retry: RetryPolicy
    ) -> None:
        self.host = host
        self.base = f"{scheme}://{host}"
        self.http = http
        self.auth = auth
        self.retry = retry
        self.requests = 0  # every HTTP request sent to this host (not to token services)

    # -- transport ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: Body = None,
        scopes: Iterable[str] = (),
        operation: str = "",
        reference: str = "",
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """An authenticated request, retried on transient failures (bytes bodies only).

        Answers with any status that no retry fixes (4xx included: the caller decides);
        raises ``TransientRegistryError`` when 429/5xx/transport failures outlast the retries.
        """
        needs = scopes_for(method, urlsplit(path).path, scopes)
        what = operation or f"{method} {path.split('?', 1)[0]}"
        ref = reference or self.host

        def once() -> httpx.Response:
            return self._send(method, path, params, headers, content, needs, what, ref, stream)

        if not retry or not (content is None or isinstance(content, bytes)):
            return once()
        return self.retry.run(f"{what} {ref}", once)

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        content: Body,
        scopes: tuple[str, ...],
        operation: str,
        reference: str,
        stream: bool,
    ) -> httpx.Response:
        absolute = path.startswith(("http://", "https://"))  # an upload Location, a next page
        url = path if absolute else self.base + path
        replayable = content is None or isinstance(content, bytes)
        if not replayable:
            self.auth.ensure(scopes)  # a stream cannot be sent twice: no 401 round trip
        for round_ in range(3):
            # none off-origin (a relative path is on the registry's origin by construction)
            sent = {**(headers or {}), **self.auth.headers(scopes, url if absolute else None)}
            request = self.http.build_request(
                method, url, params=params, headers=sent, content=content
            )
            response = self._exchange(request, operation, reference)
            if (
                response.status_code == 401
                and replayable
                and self.auth.challenged(response, scopes, round_)
            ):
                continue
            break
        status = response.status_code
        if is_transient_status(status):
            if status == 429:
                self.retry.throttled(self.host, method, retry_after(response), response.request.url)
            raise error_for(response, operation, reference)
        if not stream and status < 400:
            return _read_whole(response, reference, operation)
        return response

    def _exchange(self, request: httpx.Request, operation: str, reference: str) -> httpx.Response:
        """One request, streamed; a GET follows redirects (ACR sends blobs to storage)
        without reading their bodies whole; an error answer comes back read bounded."""
        for _ in range(MAX_REDIRECTS + 1):
            self.retry.before_request(self.host, request.method, request.url)
            self.requests += 1
            try:
                response = self.http.send(request, stream=True, follow_redirects=False)
            except httpx.TransportError as exc:
                raise transport_error(exc, operation, reference) from None
            following = response.next_request if request.method == "GET" else None
            if following is None:
                return bounded_error(response) if response.status_code >= 400 else response
            error_body(response)  # read a few KiB at most, then let the connection go
            request = following  # httpx drops Authorization when the origin changes
        raise PermanentRegistryError(
            f"{operation} {reference}: more than {MAX_REDIRECTS} redirects",
            operation=operation,
            reference=reference,
        )

    # -- manifests ------------------------------------------------------------------------
    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        response = self.request(
            "HEAD", path, headers={"Accept": ACCEPT}, operation="HEAD manifest", reference=str(ref)
        )
        if response.status_code == 404:
            return None
        expect(response, (200,), "HEAD manifest", str(ref))
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # some registries only say it on GET
            manifest = self.get_manifest(ref)
            return Descriptor(manifest.digest, manifest.media_type, len(manifest.content))
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0]
        return Descriptor(digest, media_type, int(response.headers.get("Content-Length") or 0))

    def get_manifest(self, ref: ImageRef) -> Manifest:
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"

        def fetch() -> Manifest:
            response = self.request(
                "GET",
                path,
                headers={"Accept": ACCEPT},
                stream=True,
                operation="GET manifest",
                reference=str(ref),
                retry=False,
            )
            try:
                expect(response, (200,), "GET manifest", str(ref))
                content = read_limited(response, str(ref))
            finally:
                response.close()
            expected = ref.digest or response.headers.get("Docker-Content-Digest") or None
            return Manifest.from_bytes(
                content, response.headers.get("Content-Type"), expected=expected
            )

        return self.retry.run(f"GET manifest {ref}", fetch)

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> str:
        return self.push_manifest(ref, manifest)[0]

    def push_manifest(self, ref: ImageRef, manifest: Manifest) -> tuple[str, bool]:
        """PUT the exact bytes; ``(digest, the registry handled the subject itself)``.

        The blobs (or children) of a manifest are in the target before it is pushed, so a
        ``MANIFEST_BLOB_UNKNOWN`` answer is the registry not seeing yet what it accepted
        (eventually consistent storage; a link file rewritten under a concurrent read in
        distribution's filesystem driver): retried with backoff like a 5xx.
        """
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"

        def attempt() -> httpx.Response:
            response = self.request(
                "PUT",
                path,
                headers={"Content-Type": manifest.media_type},
                content=manifest.content,
                operation="PUT manifest",
                reference=str(ref),
                retry=False,
            )
            if response.status_code == 400 and UNSEEN_BLOB in error_codes(response):
                raise TransientRegistryError(
                    f"PUT manifest {ref}: HTTP 400 ({UNSEEN_BLOB}) for blobs already pushed",
                    status=400,
                    operation="PUT manifest",
                    reference=str(ref),
                )
            return response

        response = self.retry.run(f"PUT manifest {ref}", attempt)
        expect(response, (200, 201, 202), "PUT manifest", str(ref))
        digest = response.headers.get("Docker-Content-Digest") or manifest.digest
        return digest, bool(response.headers.get("OCI-Subject"))

    def delete_manifest(self, ref: ImageRef) -> None:
        digest = ref.digest
        if digest is None:
            found = self.head_manifest(ref)
            if found is None:
                raise NotFoundError(
                    f"{ref} does not exist",
                    status=404,
                    operation="DELETE manifest",
                    reference=str(ref),
                )
            digest = found.digest
        path = f"/v2/{ref.repository}/manifests/{digest}"
        response = self.request("DELETE", path, operation="DELETE manifest", reference=str(ref))
        expect(response, (200, 202), "DELETE manifest", str(ref))

    # -- blobs ----------------------------------------------------------------------------
    def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob the repository holds, or None."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            operation="HEAD blob",
            reference=f"{repository}@{digest}",
        )
        if response.status_code == 404:
            return None
        expect(response, (200, 307), "HEAD blob", f"{repository}@{digest}")  # ACR may redirect
        return int(response.headers.get("Content-Length") or 0)

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[httpx.Response]:
        reference = f"{repository}@{digest}"
        response = self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            stream=True,
            operation="GET blob",
            reference=reference,
        )
        try:
            expect(response, (200,), "GET blob", reference)
            yield response
        finally:
            response.close()

    def start_upload(
        self, repository: str, mount: str | None = None, source: str | None = None
    ) -> tuple[bool, str]:
        """``(mounted, location)``: a mount that worked, or an upload session to finish."""
        params = {"mount": mount, "from": source} if mount and source else None
        extra = [f"repository:{source}:pull"] if params else []
        response = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            params=params,
            scopes=extra,
            operation="start upload",
            reference=repository,
        )
        expect(response, (201, 202), "start upload", repository)
        location = response.headers.get("Location", "")
        if response.status_code == 201 and params:
            return True, location
        if not location:
            raise PermanentRegistryError(f"{self.host} started an upload without a Location")
        return False, location if location.startswith("http") else self.base + location

    def finish_upload(
        self, repository: str, location: str, digest: str, content: Body, size: int | None = None
    ) -> None:
        """Monolithic PUT of the whole blob to an upload session (not retried: a stream)."""
        joiner = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None and size >= 0:
            headers["Content-Length"] = str(size)
        response = self.request(
            "PUT",
            f"{location}{joiner}digest={digest}",
            headers=headers,
            content=content,
            scopes=[f"repository:{repository}:pull,push"],
            operation="upload blob",
            reference=f"{repository}@{digest}",
            retry=isinstance(content, bytes),
        )
        expect(response, (201, 204), "upload blob", f"{repository}@{digest}")

    def push_blob(self, repository: str, data: bytes, digest: str) -> None:
        if self.head_blob(repository, digest) is not None:
            return
        _, location = self.start_upload(repository)
        self.finish_upload(repository, location, digest, data, len(data))

    def close(self) -> None:
        """Nothing of its own: the ``Registries`` owns the connection pool."""


def _read_whole(response: httpx.Response, reference: str, operation: str) -> httpx.Response:
    """A response read whole, bounded, for callers that asked for no stream. A HEAD has no
    body, and a declared length within the bound is all the connection will deliver (the
    HTTP/1.1 parser stops there); anything else is read with the bound enforced."""
    try:
        declared = int(response.headers.get("Content-Length", "-1"))
    except ValueError:
        declared = -1
    if response.request.method == "HEAD" or 0 <= declared <= MAX_BODY_BYTES:
        try:
            response.read()
        except httpx.TransportError as exc:
            raise transport_error(exc, operation, reference) from None
        return response
    try:
        body = read_limited(response, reference, limit=MAX_BODY_BYTES, what=operation)
    finally:
        response.close()
    return _with_body(response, body)


def _with_body(response: httpx.Response, body: bytes) -> httpx.Response:
    """A response read (bounded) whole, for callers that asked for no stream."""
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )
