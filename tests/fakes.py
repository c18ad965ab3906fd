"""In-memory fakes of the ports in ``replicator.app.ports``, for the middle tier of tests.

They stand in for the adapters ``build_runtime`` wires, and do what those do, not what
the worker expects:

- :class:`FakeRegistry` holds manifests by digest and tags per repository and answers the
  registry client's calls, the raw ``request`` ones included, as the OCI distribution spec
  (opencontainers/distribution-spec ``spec.md``) defines them: ``HEAD
  /v2/<name>/manifests/<reference>`` (end-3: 200 with ``Docker-Content-Digest``, 404
  ``MANIFEST_UNKNOWN``), ``GET /v2/<name>/tags/list`` (end-8a, ``n``/``last`` paging with
  ``Link: <...>; rel="next"``, 404 ``NAME_UNKNOWN``), ``GET /v2/_catalog`` (distribution's
  catalog API, the same paging), ``DELETE /v2/<name>/manifests/<digest>`` (end-9: 202, the
  manifest and every tag on it go) and, by tag, "Deleting tags": 202 where supported, else
  400 ``UNSUPPORTED`` as distribution 2.8 answers. An ACR host (``*.azurecr.io``) answers
  the ACR data-plane operations the app uses too (azure-rest-api-specs
  ``specification/containerregistry/data-plane/Azure.ContainerRegistry/stable/2021-07-01/
  containerregistry.json``): ``ContainerRegistry_DeleteTag`` (202, 404),
  ``ContainerRegistry_GetRepositories`` (``/acr/v1/_catalog``) and
  ``ContainerRegistry_GetManifests`` (``/acr/v1/<name>/_manifests``, each manifest with
  its tags). Anything else raises: a fake that answers what it does not know proves nothing.
  Referrers (the ``ReferrerLister`` port) as opencontainers/distribution-spec v1.1 has them:
  with ``referrers_api`` ("Listing Referrers") the registry lists every manifest it holds
  whose ``subject`` is the digest, and forgets a deleted one; without it (distribution
  2.8) the pusher keeps the "Referrers Tag Schema" ``sha256-<hex>`` tag, an OCI index of
  the referrers, which is an ordinary tag to the registry (listed, never updated on a
  delete). ``put_image`` makes an index of platform manifests, ``attach`` a referrer.
  Blobs (config and layers) as the integrity audit reads them: ``get_manifest`` by digest
  answers the manifest's JSON (an index listing its children, an image manifest naming its
  ``config`` and ``layers``, image-spec ``manifest.md``/``image-index.md``) under the digest
  it was stored by, ``NotFoundError`` when absent (end-3: 404 ``MANIFEST_UNKNOWN``);
  ``head_blob`` is ``HEAD /v2/<name>/blobs/<digest>`` (end-2: 200 with ``Content-Length``,
  404 when the repository lacks it). ``remove_blob`` / ``remove_manifest`` plant a defect
  (a blob or child gone under a manifest the registry still holds).
- :class:`FakeImporter` is ImportImage with ``mode: Force`` by digest (ARM
  ``Registries_ImportImage``): the target gets the digest and the job's tag points at it.
- :class:`FakeClaims` does what ``replicator.adapters.azure.claims`` does with the status
  table's conditional writes: an insert refused when the row exists, a replace refused
  when the row changed since it was read (its etag).
- :class:`FakeQueue` records each message with its delay.
- :class:`FakeCursors` does what ``replicator.adapters.azure.cursors.TableCursors`` does
  with its table rows: one per name, the position cut to ``MAX_POSITION_CHARS``, names in
  row-key order.

``fake_runtime`` builds a ``Runtime`` of them, with the real ``replicator.app.delivery``
``Planner`` (import or copy, the fallback) over the fake importer and copier.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from replicator.adapters.acr.errors import ImportUnavailableError
from replicator.adapters.azure import claims as table_claims
from replicator.adapters.azure.claims import Claim
from replicator.adapters.azure.cursors import MAX_POSITION_CHARS, Cursor
from replicator.adapters.oci.referrers import fallback_tag
from replicator.app.delivery import deliverer
from replicator.app.ports import RegistryClient
from replicator.app.runtime import Runtime
from replicator.domain.config import Settings
from replicator.domain.errors import NotFoundError, TransientRegistryError
from replicator.domain.manifests import Manifest
from replicator.domain.model import (
    CopyJob,
    CopyReport,
    Descriptor,
    JobResult,
    Target,
    is_acr_host,
    utcnow,
)
from replicator.domain.reference import ImageRef
from replicator.domain.referrers import ListedReferrer

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BLOB_PARTS = (("config", 300), ("layer", 4096))  # what ``put_image`` gives a platform


def digest_of(text: str) -> str:
    """A well-formed sha256 digest for a made-up manifest."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _error(code: str, message: str = "") -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message or code.lower()}]}).encode()


class Faults:
    """Scripted failures: each call of ``operation`` raises the next one queued for it (a
    registry's operations: ``head_manifest``, ``delete_manifest``, ``request``, or one
    request as ``"GET /v2/app/tags/list"``)."""

    def __init__(self) -> None:
        self._queued: dict[str, list[Exception]] = {}
        self._lock = threading.Lock()

    def add(self, operation: str, *errors: Exception) -> None:
        with self._lock:
            self._queued.setdefault(operation, []).extend(errors)

    def check(self, operation: str) -> None:
        with self._lock:
            queued = self._queued.get(operation)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error


@dataclass
class FakeRegistry:
    """One registry host: ``manifests[repo][digest]`` and ``tags[repo][tag] = digest``."""

    host: str
    deletes_tags: bool = False  # distribution 2.8 refuses tag deletes (400 UNSUPPORTED)
    unreachable: bool = False  # every call fails as a refused connection does
    referrers_api: bool = True  # False: referrers only as the fallback tag (distribution 2.8)
    manifests: dict[str, dict[str, Descriptor]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    children: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # index's
    subjects: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    fallbacks: dict[str, dict[str, tuple[ListedReferrer, ...]]] = field(default_factory=dict)
    layers: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # config first
    blobs: dict[str, dict[str, int]] = field(default_factory=dict)  # repo: digest -> size
    calls: list[str] = field(default_factory=list)  # "HEAD repo:ref", "DELETE repo@digest"...
    base: str = field(init=False)  # the origin listing pages must stay on
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.base = f"https://{self.host}"

    @property
    def acr(self) -> bool:
        return is_acr_host(self.host)

    # -- set-up and inspection ----------------------------------------------------------
    def put(self, repository: str, digest: str, *tags: str, media_type: str = INDEX) -> str:
        with self._lock:
            self.manifests.setdefault(repository, {})[digest] = Descriptor(digest, media_type, 512)
            for tag in tags:
                self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def put_image(self, repository: str, name: str, *tags: str, platforms: int = 2) -> str:
        """An index of ``platforms`` platform manifests, made up from ``name``, each with a
        config and a layer blob; its digest."""
        children = []
        for n in range(platforms):
            blobs = {digest_of(f"{name}/{n}/{part}"): size for part, size in BLOB_PARTS}
            for digest, size in blobs.items():
                self.put_blob(repository, digest, size)
            platform = Descriptor(digest_of(f"{name}/{n}"), MANIFEST, 512)
            children.append(self.receive(repository, platform, blobs=tuple(blobs)))
        return self.receive(repository, Descriptor(digest_of(name), INDEX, 512), children, tags)

    def put_blob(self, repository: str, digest: str, size: int) -> None:
        """A blob upload (end-4a..4b): ``repository`` holds ``digest`` of ``size`` bytes."""
        with self._lock:
            self.blobs.setdefault(repository, {})[digest] = size

    def remove_blob(self, repository: str, digest: str) -> None:
        """A defect: the blob is gone, the manifests naming it stay."""
        with self._lock:
            del self.blobs[repository][digest]

    def remove_manifest(self, repository: str, digest: str) -> None:
        """A defect: the manifest is gone (with its tags), an index listing it stays."""
        with self._lock:
            assert digest in self.manifests.get(repository, {}), f"{repository}@{digest}"
            self._drop_manifest(repository, digest)

    def blobs_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """The config and layers the manifest ``digest`` names (set-up, no call counted)."""
        with self._lock:
            return self.layers.get(repository, {}).get(digest, ())

    def holds_blob(self, repository: str, digest: str) -> bool:
        with self._lock:
            return digest in self.blobs.get(repository, {})

    def attach(
        self, repository: str, subject: str, artifact_type: str | None = SIGNATURE, name: str = ""
    ) -> str:
        """Push a referrer of ``subject`` (an artifact manifest naming it as its
        ``subject``), as a client does; its digest."""
        digest = digest_of(f"{subject}|{artifact_type}|{name}")
        self.receive(
            repository, Descriptor(digest, MANIFEST, 512), subject=(subject, artifact_type)
        )
        return digest

    def receive(
        self,
        repository: str,
        descriptor: Descriptor,
        children: Sequence[str] = (),
        tags: Iterable[str] = (),
        subject: tuple[str, str | None] | None = None,
        blobs: Sequence[str] = (),
    ) -> str:
        """A manifest PUT: with a ``subject`` the referrers API lists it; without the API
        the pusher adds it to the subject's fallback tag index (spec 1.1, "Pushing
        Manifests with Subject"), as ``replicator.adapters.oci.copy`` and the test images do."""
        with self._lock:
            self.put(repository, descriptor.digest, *tags, media_type=descriptor.media_type)
            if children:
                self.children.setdefault(repository, {})[descriptor.digest] = tuple(children)
            if blobs:
                self.layers.setdefault(repository, {})[descriptor.digest] = tuple(blobs)
            if subject is not None:
                self.subjects.setdefault(repository, {})[descriptor.digest] = subject
                if not self.referrers_api:
                    self._list_under(
                        repository, subject[0], ListedReferrer(descriptor.digest, subject[1])
                    )
        return descriptor.digest

    def _list_under(self, repository: str, subject: str, referrer: ListedReferrer) -> None:
        listed = self._fallback(repository, subject)
        if referrer in listed:
            return
        self._index_under(repository, subject, (*listed, referrer))

    def _index_under(
        self, repository: str, subject: str, entries: tuple[ListedReferrer, ...]
    ) -> None:
        """PUT the subject's fallback tag: an index of ``entries``."""
        index = digest_of("fallback|" + "|".join(f"{r.digest}={r.artifact_type}" for r in entries))
        self.fallbacks.setdefault(repository, {})[index] = entries
        self.put(repository, index, fallback_tag(subject))

    def _fallback(self, repository: str, subject: str) -> tuple[ListedReferrer, ...]:
        index = self.tags.get(repository, {}).get(fallback_tag(subject))
        if index is None or index not in self.manifests.get(repository, {}):
            return ()
        return self.fallbacks.get(repository, {}).get(index, ())

    def _api_referrers(self, repository: str, subject: str) -> tuple[ListedReferrer, ...]:
        held = self.manifests.get(repository, {})
        return tuple(
            sorted(
                ListedReferrer(d, kind)
                for d, (s, kind) in self.subjects.get(repository, {}).items()
                if s == subject and d in held
            )
        )

    # -- the ReferrerLister port (through ``FakeRegistries``) ----------------------------
    def list_subjects(self, repository: str, digest: str) -> tuple[str, ...] | None:
        """The manifest (GET by digest) and the children an index lists, or None."""
        self._enter("subjects", f"GET {repository}@{digest}")
        with self._lock:
            if digest not in self.manifests.get(repository, {}):
                return None
            return (digest, *self.children.get(repository, {}).get(digest, ()))

    def list_referrers(
        self, repository: str, subject: str, *, fallback_first: bool = False
    ) -> tuple[ListedReferrer, ...]:
        """As ``list_referrers`` answers: the API's index where there is one (after the
        fallback tag when ``fallback_first`` and it lists any), else the fallback tag."""
        self._enter("referrers", f"REFERRERS {repository}@{subject}")
        with self._lock:
            if fallback_first or not self.referrers_api:
                found = self._fallback(repository, subject)
                if found or not self.referrers_api:
                    return found
            return self._api_referrers(repository, subject)

    def unlist(self, repository: str, digest: str) -> str | None:
        """As ``unlist_referrer``: without the API, the subject's fallback index rewritten
        without the referrer (the tag moves to the new index); the subject, or None."""
        self._enter("unlist", f"UNLIST {repository}@{digest}")
        with self._lock:
            found = self.subjects.get(repository, {}).get(digest)
            if (
                self.referrers_api
                or found is None
                or digest not in self.manifests.get(repository, {})
            ):
                return None
            listed = self._fallback(repository, found[0])
            if not any(r.digest == digest for r in listed):
                return None
            self._index_under(repository, found[0], tuple(r for r in listed if r.digest != digest))
            return found[0]

    def referrers_of(self, repository: str, subject: str) -> tuple[ListedReferrer, ...]:
        """What this registry lists for ``subject``, without counting a call (set-up)."""
        with self._lock:
            if self.referrers_api:
                return self._api_referrers(repository, subject)
            return self._fallback(repository, subject)

    def tag_of(self, repository: str, tag: str) -> str | None:
        with self._lock:
            return self.tags.get(repository, {}).get(tag)

    def holds(self, repository: str, digest: str) -> bool:
        with self._lock:
            return digest in self.manifests.get(repository, {})

    def snapshot(self) -> tuple[dict[str, dict[str, Descriptor]], dict[str, dict[str, str]]]:
        with self._lock:
            return (
                {r: dict(m) for r, m in self.manifests.items()},
                {r: dict(t) for r, t in self.tags.items()},
            )

    def _resolve(self, repository: str, reference: str) -> Descriptor | None:
        digest = reference if ":" in reference else self.tags.get(repository, {}).get(reference)
        return self.manifests.get(repository, {}).get(digest or "")

    def _enter(self, operation: str, call: str) -> None:
        with self._lock:
            self.calls.append(call)
        if self.unreachable:
            raise TransientRegistryError(
                f"{operation} {self.host}: ConnectError: connection refused",
                operation=operation,
                reference=self.host,
            )
        self.faults.check(operation)
        self.faults.check(call)

    # -- the client's manifest calls ----------------------------------------------------
    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        self._enter("head_manifest", f"HEAD {ref.repository}:{ref.reference}")
        with self._lock:
            return self._resolve(ref.repository, ref.reference)

    def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest's JSON (children, config and layers as stored) under its digest."""
        self._enter("get_manifest", f"GET {ref.repository}:{ref.reference}")
        with self._lock:
            found = self._resolve(ref.repository, ref.reference)
            if found is None:
                raise NotFoundError(f"{ref} does not exist", status=404, reference=str(ref))
            children = self.children.get(ref.repository, {}).get(found.digest, ())
            blobs = self.layers.get(ref.repository, {}).get(found.digest, ())
            sizes = self.blobs.get(ref.repository, {})
        body: dict[str, Any] = {"schemaVersion": 2, "mediaType": found.media_type}
        if found.media_type == INDEX:
            body["manifests"] = [
                {"mediaType": MANIFEST, "digest": c, "size": 512} for c in children
            ]
        else:
            named = [{"mediaType": LAYER, "digest": b, "size": sizes.get(b, -1)} for b in blobs]
            if named:
                body["config"] = {**named[0], "mediaType": CONFIG}
            body["layers"] = named[1:]
        content = json.dumps(body).encode()
        return Manifest(content, found.media_type, found.digest)

    def head_blob(self, repository: str, digest: str) -> int | None:
        self._enter("head_blob", f"HEAD {repository}@{digest} (blob)")
        with self._lock:
            return self.blobs.get(repository, {}).get(digest)

    def delete_manifest(self, ref: ImageRef) -> None:
        self._enter("delete_manifest", f"DELETE {ref.repository}@{ref.reference}")
        with self._lock:
            found = self._resolve(ref.repository, ref.reference)
            if found is None:
                raise NotFoundError(f"{ref} does not exist", status=404, reference=str(ref))
            self._drop_manifest(ref.repository, found.digest)

    def _drop_manifest(self, repository: str, digest: str) -> None:
        self.manifests.get(repository, {}).pop(digest, None)
        tags = self.tags.get(repository, {})
        for tag in [t for t, d in tags.items() if d == digest]:
            del tags[tag]

    # -- raw requests -------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        scopes: Iterable[str] = (),
        operation: str = "",
        reference: str = "",
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        url = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()} | dict(params or {})
        self._enter("request", f"{method} {url.path}")
        with self._lock:
            status, extra, body = self._answer(method, url.path, query)
        request = httpx.Request(method, self.base + path)
        content = b"" if method == "HEAD" else body
        return httpx.Response(status, headers=extra, content=content, request=request)

    def _answer(
        self, method: str, path: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if path == "/v2/_catalog" and method == "GET":
            return self._listing(path, query, sorted(self._repositories()), "repositories", {})
        if path == "/acr/v1/_catalog" and method == "GET" and self.acr:
            return self._listing(path, query, sorted(self._repositories()), "repositories", {})
        if path.startswith("/acr/v1/") and self.acr:
            return self._acr(method, path.removeprefix("/acr/v1/"), query)
        if path.startswith("/v2/"):
            name, sep, rest = path.removeprefix("/v2/").rpartition("/manifests/")
            if sep:
                return self._manifest(method, name, rest)
            name, sep, _ = path.removeprefix("/v2/").rpartition("/tags/list")
            if sep and method == "GET":
                if name not in self.tags and name not in self.manifests:
                    return 404, {}, _error("NAME_UNKNOWN")
                names = sorted(self.tags.get(name, {}))
                return self._listing(path, query, names, "tags", {"name": name})
        raise NotImplementedError(f"FakeRegistry {self.host} does not answer {method} {path}")

    def _repositories(self) -> set[str]:
        return {r for r in {*self.manifests, *self.tags} if self.manifests.get(r)}

    def _manifest(
        self, method: str, name: str, reference: str
    ) -> tuple[int, dict[str, str], bytes]:
        found = self._resolve(name, reference)
        if method == "HEAD":
            if found is None:
                return 404, {}, b""
            return (
                200,
                {
                    "Docker-Content-Digest": found.digest,
                    "Content-Type": found.media_type,
                    "Content-Length": str(found.size),
                },
                b"",
            )
        if method == "DELETE":
            if found is None:
                return 404, {}, _error("MANIFEST_UNKNOWN")
            if ":" in reference:  # by digest: the manifest, and every tag on it
                self._drop_manifest(name, found.digest)
                return 202, {}, b""
            if not self.deletes_tags:
                return 400, {"Content-Type": "application/json"}, _error("UNSUPPORTED")
            del self.tags[name][reference]
            return 202, {}, b""
        raise NotImplementedError(f"FakeRegistry {self.host} does not answer {method} manifests")

    def _acr(
        self, method: str, rest: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        name, sep, tag = rest.rpartition("/_tags/")
        if sep and method == "DELETE":  # ContainerRegistry_DeleteTag
            if tag not in self.tags.get(name, {}):
                return 404, {}, _error("TAG_UNKNOWN")
            del self.tags[name][tag]
            return 202, {}, b""
        name, sep, _ = rest.rpartition("/_manifests")
        if sep and method == "GET":  # ContainerRegistry_GetManifests
            if name not in self._repositories():
                return 404, {}, _error("NAME_UNKNOWN")
            items = [
                {
                    "digest": d,
                    "tags": sorted(t for t, at in self.tags.get(name, {}).items() if at == d),
                }
                for d in sorted(self.manifests[name])
            ]
            path = f"/acr/v1/{name}/_manifests"
            return self._listing(path, query, items, "manifests", {"imageName": name})
        raise NotImplementedError(
            f"FakeRegistry {self.host} does not answer {method} /acr/v1/{rest}"
        )

    def _listing(
        self,
        path: str,
        query: dict[str, str],
        items: Sequence[Any],
        key: str,
        head: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        """One page of ``items`` after ``last``, ``n`` long, with a Link to the next."""
        n = int(query.get("n") or 100)

        def name(item: Any) -> str:
            return str(item["digest"] if isinstance(item, dict) else item)

        last = query.get("last")
        rest = [i for i in items if last is None or name(i) > last]
        page, more = rest[:n], len(rest) > n
        headers = {"Content-Type": "application/json"}
        if more:
            nxt = urlencode({"last": name(page[-1]), "n": n})
            headers["Link"] = f'<{path}?{nxt}>; rel="next"'
        return 200, headers, json.dumps({**head, key: page}).encode()


class FakeRegistries:
    """``client(host)`` for the configured hosts only; any other host is a test failure
    (the replicator must never touch a registry it was not configured with)."""

    def __init__(self, *registries: FakeRegistry) -> None:
        self.by_host = {r.host: r for r in registries}
        self.closed = False

    def client(self, host: str) -> RegistryClient:
        if host not in self.by_host:
            raise AssertionError(f"the app reached {host}, which is not configured")
        return self.by_host[host]

    def close(self) -> None:
        self.closed = True

    def subjects(self, host: str, repository: str, digest: str) -> tuple[str, ...] | None:
        return self.by_host[host].list_subjects(repository, digest)

    def referrers(
        self, host: str, repository: str, subject: str, *, fallback_first: bool = False
    ) -> tuple[ListedReferrer, ...]:
        return self.by_host[host].list_referrers(repository, subject, fallback_first=fallback_first)

    def unlist(self, host: str, repository: str, digest: str) -> str | None:
        return self.by_host[host].unlist(repository, digest)


@dataclass
class FakeCopier:
    """A data-plane copy between fake registries: the manifest, its children, the
    referrers of each (to ``MAX_DEPTH``, as ``replicator.adapters.oci.copy`` copies them),
    then the destination tag."""

    registries: FakeRegistries
    copies: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # the copies asked to repair
    faults: Faults = field(default_factory=Faults)

    def copy_image(self, src: ImageRef, dst: ImageRef, *, repair: bool = False) -> CopyReport:
        self.faults.check("copy_image")
        source = self.registries.by_host[src.registry]
        found = source.head_manifest(src)
        if found is None:
            raise NotFoundError(f"{src} does not exist", status=404, reference=str(src))
        target = self.registries.by_host[dst.registry]
        if target.unreachable:
            target.head_manifest(dst)  # raises as the copy's first request would
        copied = copy_tree(source, target, src.repository, found.digest, repair=repair)
        if dst.tag:
            target.put(dst.repository, found.digest, dst.tag, media_type=found.media_type)
        self.copies.append(f"{src.repository}@{found.digest}->{dst.registry}")
        if repair:
            self.repairs.append(self.copies[-1])
        return CopyReport(
            found.digest,
            manifests_copied=1,
            bytes_copied=found.size,
            referrers_copied=copied - 1,
        )


def copy_tree(
    source: FakeRegistry,
    target: FakeRegistry,
    repository: str,
    digest: str,
    *,
    repair: bool = False,
) -> int:
    """Bring ``repository@digest`` from ``source`` to ``target`` with its children and the
    referrers of each, as the copy does (the target's own way of listing referrers: its
    API, else the fallback tag); how many top-level manifests and referrers it brought.
    The blobs of a manifest come with it when the target lacks the manifest, and with
    ``repair`` (the copy's repair: every blob under what the target holds checked) the
    missing blobs under every manifest; the copy never descends into a child it holds."""
    brought, todo, seen = 0, [digest], set()
    while todo:
        top = todo.pop(0)
        if top in seen:
            continue
        seen.add(top)
        with source._lock:
            found = source.manifests.get(repository, {}).get(top)
            children = source.children.get(repository, {}).get(top, ())
            subject = source.subjects.get(repository, {}).get(top)
            kids = [source.manifests[repository][c] for c in children]
            under = [r.digest for m in (top, *children) for r in source.referrers_of(repository, m)]
        if found is None:
            continue
        for kid in kids:
            _bring_blobs(source, target, repository, kid.digest, repair=repair)
            target.receive(repository, kid, blobs=source.blobs_of(repository, kid.digest))
        _bring_blobs(source, target, repository, top, repair=repair)
        target.receive(
            repository, found, children, subject=subject, blobs=source.blobs_of(repository, top)
        )
        brought += 1
        todo += under
    return brought


def _bring_blobs(
    source: FakeRegistry, target: FakeRegistry, repository: str, digest: str, *, repair: bool
) -> None:
    """The blobs of ``digest`` the target lacks (all, unless it holds the manifest and this
    is no repair); a blob the source lacks stays missing, as a failed copy leaves it."""
    if target.holds(repository, digest) and not repair:
        return
    for blob in source.blobs_of(repository, digest):
        with source._lock:
            size = source.blobs.get(repository, {}).get(blob)
        if size is not None and not target.holds_blob(repository, blob):
            target.put_blob(repository, blob, size)


@dataclass
class FakeImporter:
    """ImportImage by digest with ``mode: Force``: the job's tag in ``target`` points at
    ``digest`` afterwards, whatever it pointed at before. ``refuse`` is raised instead."""

    registries: FakeRegistries
    imports: list[str] = field(default_factory=list)
    refuse: ImportUnavailableError | None = None

    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        if self.refuse is not None:
            raise self.refuse
        source = self.registries.by_host[job.source]
        if not source.holds(job.repository, digest):
            raise NotFoundError(f"{job.repository}@{digest} is not in the source", status=404)
        dst = self.registries.by_host[target.login_server]
        dst.put(job.repository, digest, *([job.tag] if job.tag else []))
        self.imports.append(f"{job.repository}@{digest}->{target.login_server}")
        return CopyReport(digest, manifests_copied=1)


@dataclass
class FakeQueue:
    """The jobs queue (or the plans queue): what was sent, with its delay, and poison."""

    name: str = "replication-jobs"
    sent: list[tuple[CopyJob, int]] = field(default_factory=list)
    texts: list[tuple[str, int]] = field(default_factory=list)
    poisoned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def poison_name(self) -> str:
        return f"{self.name}-poison"

    @property
    def jobs(self) -> list[CopyJob]:
        return [job for job, _ in self.sent]

    def send(self, job: CopyJob, *, delay_seconds: int = 0) -> None:
        self.sent.append((job, delay_seconds))

    def send_text(self, text: str, *, delay_seconds: int = 0) -> None:
        self.texts.append((text, delay_seconds))

    def send_poison(self, body: str, reason: str) -> None:
        self.poisoned.append((body, reason))

    def depth(self, queue: str | None = None) -> int:
        if queue == self.poison_name:
            return len(self.poisoned)
        return len(self.sent) + len(self.texts)

    def replay_poison(self, repository: str | None = None, limit: int = 10_000) -> int:
        moved = [(b, r) for b, r in self.poisoned if repository is None or repository in b]
        moved = moved[:limit]
        for item in moved:
            self.poisoned.remove(item)
            self.texts.append((item[0], 0))
        return len(moved)


@dataclass
class FakeStatus:
    """The status table: the last result per (repository, tag or digest, target), as the
    table keys its rows, and every result in order (``results``)."""

    results: list[JobResult] = field(default_factory=list)
    rows: dict[tuple[str, str, str], JobResult] = field(default_factory=dict)
    reconciles: list[tuple[dict[str, dict[str, int]], int]] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, result: JobResult) -> None:
        job = result.job
        self.results.append(result)
        self.rows[(job.repository, job.tag or "@" + job.digest, job.target)] = result

    def images(self, repository: str, tag: str | None) -> list[dict[str, object]]:
        return [
            _row(result)
            for (repo, key, _), result in sorted(self.rows.items())
            if repo == repository and (tag is None or key == tag)
        ]

    def since(self, when: datetime) -> list[dict[str, object]]:
        return [_row(r) for r in self.rows.values() if r.finished_at >= when]

    def record_reconcile(self, drift: dict[str, dict[str, int]], enqueued: int) -> None:
        self.reconciles.append((drift, enqueued))

    def last_reconcile(self) -> dict[str, object] | None:
        if not self.reconciles:
            return None
        drift, enqueued = self.reconciles[-1]
        return {"drift": drift, "enqueued": enqueued}

    def record_untag_refused(self, target: str, reason: str) -> None:
        self.refusals[target] = reason

    def untag_refused(self, target: str) -> str | None:
        return self.refusals.get(target)

    def record_plan(
        self, plan_id: str, request: str, state: str, *, started: datetime | None = None
    ) -> None:
        row = self.plans.setdefault(plan_id, {"plan": plan_id})
        row.update(request=json.loads(request), state=state)
        if started is not None:
            row["startedAt"] = started.isoformat()

    def update_plan(self, plan_id: str, **fields: object) -> None:
        self.plans.setdefault(plan_id, {"plan": plan_id}).update(fields)

    def plan(self, plan_id: str) -> dict[str, Any] | None:
        return self.plans.get(plan_id)


def _row(result: JobResult) -> dict[str, object]:
    job = result.job
    return {
        "repository": job.repository,
        "tag": job.tag or "",
        "digest": result.digest or job.digest,
        "target": job.target,
        "outcome": result.outcome.value,
        "strategy": str(result.strategy),
        "lastError": result.error or "",
    }


@dataclass
class _ClaimRow:
    pushed_at: str
    claimed_at: datetime
    done: bool
    etag: int


class FakeClaims:
    """``replicator.adapters.azure.claims`` on an in-memory table: the same decisions on
    the same conditional writes (insert if absent, replace if the etag is unchanged).
    ``between_read_and_write`` runs after a claim read an existing row and before it
    replaces it: a test makes another worker's claim land there."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = utcnow,
        lease: timedelta | None = None,
    ) -> None:
        self.clock = clock
        self.lease = lease
        self.rows: dict[str, _ClaimRow] = {}
        self.between_read_and_write: Callable[[], None] | None = None
        self.log: list[tuple[str, str]] = []  # (job id, "owned" | "busy" | ... | "released")
        self._etags = 0
        self._lock = threading.RLock()

    def _etag(self) -> int:
        self._etags += 1
        return self._etags

    def claim(self, job: CopyJob) -> Claim:
        state = self._claim(job)
        self.log.append((job.job_id, state.value))
        return state

    def _claim(self, job: CopyJob) -> Claim:
        push = job.pushed_at.isoformat() if job.pushed_at else ""
        with self._lock:  # Insert Entity: refused (409) when the key exists
            if job.job_id not in self.rows:
                self.rows[job.job_id] = _ClaimRow(push, self.clock(), False, self._etag())
                return Claim.OWNED
            current = self.rows[job.job_id]
            read = _ClaimRow(current.pushed_at, current.claimed_at, current.done, current.etag)
        lease = self.lease if self.lease is not None else table_claims.CLAIM_LEASE
        if read.pushed_at == push and read.done:
            return Claim.DONE
        if read.pushed_at == push and self.clock() - read.claimed_at < lease:
            return Claim.BUSY
        if self.between_read_and_write is not None:
            hook, self.between_read_and_write = self.between_read_and_write, None
            hook()
        with self._lock:  # Update Entity with If-Match: refused (412) when it changed
            now = self.rows.get(job.job_id)
            if now is None or now.etag != read.etag:
                return Claim.BUSY
            self.rows[job.job_id] = _ClaimRow(push, self.clock(), False, self._etag())
            return Claim.OWNED

    def release(self, job: CopyJob, *, done: bool) -> None:
        push = job.pushed_at.isoformat() if job.pushed_at else ""
        with self._lock:
            if done:
                self.rows[job.job_id] = _ClaimRow(push, self.clock(), True, self._etag())
            else:
                self.rows.pop(job.job_id, None)
        self.log.append((job.job_id, "done" if done else "released"))


class FakeCursors:
    """``replicator.adapters.azure.cursors.TableCursors`` on an in-memory table: a row per
    name (``put`` replaces it), the position cut to ``MAX_POSITION_CHARS`` and the counts
    kept as ints (the row's JSON), a name never written read as the start, a prefix read
    in row-key order."""

    def __init__(self) -> None:
        self.rows: dict[str, Cursor] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Cursor:
        with self._lock:
            return self.rows.get(name, Cursor(name))

    def put(self, cursor: Cursor) -> None:
        counts = {str(k): int(v) for k, v in cursor.counts.items()}
        stored = replace(cursor, position=cursor.position[:MAX_POSITION_CHARS], counts=counts)
        with self._lock:
            self.rows[cursor.name] = stored

    def starting_with(self, prefix: str) -> list[Cursor]:
        with self._lock:
            return [c for n, c in sorted(self.rows.items()) if prefix <= n < prefix + "\uffff"]


@dataclass
class FakePlanBlobs:
    documents: dict[str, str] = field(default_factory=dict)

    def put(self, plan_id: str, text: str) -> str:
        self.documents[plan_id] = text
        return f"memory://plans/{plan_id}.json"


@dataclass
class Fakes:
    """A runtime of fakes and the fakes themselves, for assertions."""

    runtime: Runtime
    source: FakeRegistry
    targets: dict[str, FakeRegistry]
    queue: FakeQueue
    status: FakeStatus
    claims: FakeClaims
    copier: FakeCopier
    importer: FakeImporter
    cursors: FakeCursors

    @property
    def target(self) -> FakeRegistry:
        (only,) = self.targets.values()
        return only


def fake_runtime(
    settings: Settings,
    *,
    claims: FakeClaims | None = None,
    deletes_tags: bool = False,
) -> Fakes:
    """A ``Runtime`` for ``settings`` made of fakes: an empty registry per configured host,
    the real delivery planner over the fake importer and copier."""
    source = FakeRegistry(settings.source)
    targets = {
        t.login_server: FakeRegistry(t.login_server, deletes_tags=deletes_tags)
        for t in settings.targets
    }
    registries = FakeRegistries(source, *targets.values())
    copier = FakeCopier(registries)
    importer = FakeImporter(registries)
    queue, status = FakeQueue(), FakeStatus()
    claims = claims or FakeClaims()
    runtime = Runtime(
        settings=settings,
        registries=registries,
        queue=queue,
        status=status,
        claims=claims,
        plans=FakeQueue(name="replication-plans"),
        plan_blobs=FakePlanBlobs(),
        cursors=(cursors := FakeCursors()),
        referrers=registries,
        deliver=deliverer(settings, importer=importer, copier=copier),
        busy_recheck_seconds=30,
    )
    return Fakes(runtime, source, targets, queue, status, claims, copier, importer, cursors)
