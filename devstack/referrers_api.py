"""A registry with the OCI 1.1 referrers API: a layer in front of a real distribution registry.

The CNCF distribution registry the stack runs (2.8) has no referrers API; ACR has it. This
layer gives a real registry the API as opencontainers/distribution-spec v1.1.1 (spec.md)
defines it, and passes everything else through unchanged, streamed both ways
(``devstack.passthrough``):

- "Listing Referrers" (endpoints end-12a, end-12b): ``GET /v2/<name>/referrers/<digest>``
  answers 200 with an OCI image index (``Content-Type`` the index type) whose ``manifests``
  are descriptors of the image manifests and indexes pushed into ``<name>`` with that
  ``subject``; each carries ``artifactType`` (the manifest's own, else its config's
  ``mediaType``; omitted for an index without one) and the manifest's annotations. Never a
  404 (a registry with the API must not answer one); a malformed digest or name is a 400;
  no match is an empty list. ``?artifactType=`` filters, answered with
  ``OCI-Filters-Applied: artifactType``. A list longer than ``page_size`` comes in pages
  linked by ``Link: <...>; rel="next"`` (RFC 5988), each page an index of other descriptors.
- "Pushing Manifests with Subject": a manifest PUT whose body has a ``subject`` is answered
  with ``OCI-Subject: <subject digest>`` once the registry stored it. "Push" (a manifest
  whose subject does not exist yet is accepted, either order) holds because the subject is
  only recorded, never looked up.
- "Deleting Manifests": a manifest deleted by digest (202 from the registry) leaves the
  referrers lists at once.
- "Pushing Manifests": a manifest body over ``max_manifest_bytes`` (4 MiB, what clients
  should expect to be able to push) is refused with 413 before it reaches the registry.

The index is what was pushed through this layer ("Enabling the Referrers API" asks a
registry that gains the API to adopt referrers tag schema indexes already there: the layer
starts with its registry, empty, so it has none to adopt). Authorization is the registry's:
a listing is answered only when the registry answers the same credentials' HEAD of the
subject with something other than 401/403 (whose answer, challenge included, is relayed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from devstack.localstack import LocalStack, Registry
from devstack.passthrough import PassThrough, PassThroughServer, errors

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# spec.md, "Pulling manifests": the repository name and digest grammars
NAME = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
REFERRERS = re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]*)")
MANIFESTS = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")
NAME_RE = re.compile(NAME)


@dataclass
class ReferrersIndex:
    """``(name, subject) -> {digest: descriptor}``, and each referrer's subject."""

    lists: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    subjects: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, subject: str, descriptor: dict[str, Any]) -> None:
        with self.lock:
            self.lists.setdefault((name, subject), {})[descriptor["digest"]] = descriptor
            self.subjects[(name, descriptor["digest"])] = subject

    def forget(self, name: str, digest: str) -> None:
        with self.lock:
            subject = self.subjects.pop((name, digest), None)
            if subject is not None:
                self.lists.get((name, subject), {}).pop(digest, None)

    def listed(self, name: str, subject: str, artifact_type: str | None) -> list[dict[str, Any]]:
        """The descriptors, ordered by digest (a stable order to page through)."""
        with self.lock:
            found = list(self.lists.get((name, subject), {}).values())
        if artifact_type is not None:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return sorted(found, key=lambda d: str(d["digest"]))


def descriptor_of(body: dict[str, Any], content: bytes, media_type: str) -> dict[str, Any]:
    """The referrers list's descriptor of a pushed manifest ("Listing Referrers")."""
    found: dict[str, Any] = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
        "size": len(content),
    }
    artifact_type = body.get("artifactType")
    config = body.get("config")
    if not artifact_type and media_type == OCI_MANIFEST and isinstance(config, dict):
        artifact_type = config.get("mediaType")
    if isinstance(artifact_type, str) and artifact_type:
        found["artifactType"] = artifact_type
    if isinstance(body.get("annotations"), dict):
        found["annotations"] = body["annotations"]
    return found


def subject_of(content: bytes, content_type: str) -> tuple[str, dict[str, Any]] | None:
    """``(subject digest, descriptor)`` of an OCI image manifest or index with a subject."""
    try:
        body = json.loads(content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    media_type = body.get("mediaType") or content_type.split(";", 1)[0].strip()
    subject = body.get("subject")
    if media_type not in (OCI_MANIFEST, OCI_INDEX) or not isinstance(subject, dict):
        return None
    digest = subject.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        return None
    return digest, descriptor_of(body, content, media_type)


@dataclass
class ReferrersApi:
    """The layer, on a free loopback port, in front of ``upstream`` (``host:port``)."""

    upstream: str
    page_size: int = 100
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    index: ReferrersIndex = field(default_factory=ReferrersIndex)
    requests: list[str] = field(default_factory=list)  # "METHOD path" of each request
    tags_written: list[tuple[str, str]] = field(default_factory=list)  # (name, tag) PUT
    _server: _Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        assert self._server is not None, "start() the layer first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ReferrersApi:
        self._server = _Server(self)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ReferrersApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def note(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(f"{method} {path}")

    def wrote_tag(self, name: str, tag: str) -> None:
        with self._lock:
            self.tags_written.append((name, tag))


@dataclass
class ReferrersRegistry(Registry):
    """A distribution registry behind a ``ReferrersApi``: ``host`` is the layer's."""

    api: ReferrersApi = field(default_factory=lambda: ReferrersApi(""))
    backend: Registry | None = None  # the registry itself, reached without the layer

    def stop(self) -> None:
        self.api.stop()
        if self.backend is not None:
            self.backend.stop()


def start_referrers_registry(
    stack: LocalStack, *, page_size: int = 100, config: Mapping[str, object] | None = None
) -> ReferrersRegistry:
    """A fresh distribution registry (``config`` as ``LocalStack.start_registry`` takes it)
    with the referrers API in front; ``stop()`` stops both."""
    backend = stack.start_registry(config=config)
    api = ReferrersApi(backend.host, page_size=page_size).start()
    port = int(api.host.rpartition(":")[2])
    return ReferrersRegistry(api.host, port, backend.service, backend.access_log, api, backend)


@contextlib.contextmanager
def referrers_registry(
    stack: LocalStack, *, page_size: int = 100, config: Mapping[str, object] | None = None
) -> Iterator[ReferrersRegistry]:
    running = start_referrers_registry(stack, page_size=page_size, config=config)
    try:
        yield running
    finally:
        running.stop()


# The four shape pairs a replication can run between: with the referrers API ("api", as
# ACR) or with only the referrers tag schema ("fallback", distribution 2.8), each side.
SHAPE_PAIRS = [("api", "api"), ("fallback", "fallback"), ("api", "fallback"), ("fallback", "api")]
SHAPE_IDS = [f"{source}-to-{target}" for source, target in SHAPE_PAIRS]


def start_shaped(stack: LocalStack, kind: str, *, page_size: int = 2) -> Registry:
    """A fresh registry of ``kind``: ``api`` (the referrers API in front, pages of
    ``page_size``) or ``fallback`` (a plain distribution registry)."""
    if kind == "api":
        return start_referrers_registry(stack, page_size=page_size)
    return stack.start_registry()


@contextlib.contextmanager
def shaped_pair(stack: LocalStack, *kinds: str) -> Iterator[tuple[Registry, Registry]]:
    """(source, target) of the ``kinds`` given, stopped afterwards."""
    source, target = (start_shaped(stack, kind) for kind in kinds)
    try:
        yield source, target
    finally:
        source.stop()
        target.stop()


class _Server(PassThroughServer):
    def __init__(self, api: ReferrersApi) -> None:
        super().__init__(api.upstream, _Handler)
        self.api = api


class _Handler(PassThrough):
    server: _Server

    def _serve(self) -> None:
        api = self.server.api
        path = urlsplit(self.path).path
        api.note(self.command, self.path)
        listing = REFERRERS.fullmatch(path)
        if self.command == "GET" and listing:
            self._referrers(listing["name"], listing["digest"])
            return
        manifest = MANIFESTS.fullmatch(path)
        if self.command == "PUT" and manifest:
            self._put_manifest(manifest["name"], manifest["reference"])
            return
        response = self.forward(self.body_stream())
        deleted = self.command == "DELETE" and response.status_code == 202
        if deleted and manifest and DIGEST.fullmatch(manifest["reference"]):
            api.index.forget(manifest["name"], manifest["reference"])
        self.relay(response)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

    # -- the referrers API -------------------------------------------------------------
    def _referrers(self, name: str, digest: str) -> None:
        if not NAME_RE.fullmatch(name):
            self.error(400, "NAME_INVALID", "invalid repository name")
            return
        if not DIGEST.fullmatch(digest):
            self.error(400, "DIGEST_INVALID", "invalid digest")
            return
        check = self.forward(None, method="HEAD", path=f"/v2/{name}/manifests/{digest}")
        check.close()
        if check.status_code in (401, 403):  # a HEAD has no body: the challenge, an error
            code = "UNAUTHORIZED" if check.status_code == 401 else "DENIED"
            headers = {"Content-Type": "application/json"}
            if "WWW-Authenticate" in check.headers:
                headers["WWW-Authenticate"] = check.headers["WWW-Authenticate"]
            body = errors(code, "authentication required" if code == "UNAUTHORIZED" else code)
            self.answer(check.status_code, headers, json.dumps(body).encode())
            return
        query = parse_qs(urlsplit(self.path).query)
        artifact_type = query.get("artifactType", [None])[-1]
        after = query.get("last", [""])[-1]
        found = self.server.api.index.listed(name, digest, artifact_type)
        rest = [d for d in found if str(d["digest"]) > after]
        size = max(1, self.server.api.page_size)
        page, more = rest[:size], len(rest) > size
        headers = {"Content-Type": OCI_INDEX}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        if more:
            link = f"/v2/{name}/referrers/{digest}?last={quote(str(page[-1]['digest']))}"
            if artifact_type is not None:
                link += f"&artifactType={quote(artifact_type, safe='')}"
            headers["Link"] = f'<{link}>; rel="next"'
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page}
        self.answer(200, headers, json.dumps(body).encode())

    def _put_manifest(self, name: str, reference: str) -> None:
        content = self.bounded_body(self.server.api.max_manifest_bytes)
        if content is None:
            self.error(413, "SIZE_INVALID", "manifest over the registry's limit")
            return
        response = self.forward(content)
        headers: dict[str, str] = {}
        found = subject_of(content, self.headers.get("Content-Type", ""))
        if response.status_code == 201:
            if not DIGEST.fullmatch(reference):
                self.server.api.wrote_tag(name, reference)
            if found is not None:
                self.server.api.index.add(name, *found)
                headers["OCI-Subject"] = found[0]
        self.relay(response, headers)
