"""Push test images (for tests, the demo and benchmarks): the one helper that does.

All of it goes through the package's own ``RegistryClient`` (its auth, retries and
bounded reads), so a test image is pushed the way the replicator talks to registries.

- ``push_test_image``: a random multi-platform image, an OCI index (or a Docker manifest
  list) of one manifest per platform, each with a config and ``layers`` random layers,
  plus optional referrers: OCI artifacts whose ``subject`` is the index and the first
  platform's manifest, indexed under the fallback tag where the registry has no referrers
  API. Layers are generated chunk by chunk from a seed, so even a 512 MiB layer is pushed
  in constant memory. ``push_images`` pushes ``count`` of them over a few repositories.
- ``seed``: many tiny single-platform images, fast, with digests known in advance
  (``manifest_digest``): every one shares one config and one small layer, uploaded once
  per registry and cross-repository mounted elsewhere, so a repository costs two mounts
  and a manifest PUT per tag. ``variant`` goes into an annotation, so two variants of a
  tag are two different manifest digests over the same blobs (how stale tags are planted).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.referrers import Referrers, update_fallback
from replicator.adapters.oci.registries import Registries
from replicator.domain import manifests as mt
from replicator.domain.manifests import Manifest
from replicator.domain.reference import ImageRef

CHUNK = 1024 * 1024
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"


@dataclass(frozen=True)
class PushedImage:
    digest: str  # the top-level index / manifest list
    size: int
    media_type: str
    manifests: tuple[str, ...]  # the per-platform manifests
    blobs: tuple[str, ...]
    referrers: int  # how many referrers were pushed (0 when referrers=False)
    referrer_digests: tuple[str, ...] = ()


def _chunks(seed: bytes, size: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    left = size
    while left > 0:
        take = min(CHUNK, left)
        yield rng.randbytes(take)
        left -= take


def push_random_blob(client: RegistryClient, repository: str, size: int) -> tuple[str, int]:
    """A random blob of ``size`` bytes, streamed twice (hash, then upload): constant memory."""
    seed = os.urandom(16)
    hasher = hashlib.sha256()
    for chunk in _chunks(seed, size):
        hasher.update(chunk)
    digest = "sha256:" + hasher.hexdigest()
    _, location = client.start_upload(repository)
    client.finish_upload(repository, location, digest, _chunks(seed, size), size)
    return digest, size


def _push_json(client: RegistryClient, repository: str, body: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(body, separators=(",", ":")).encode()
    digest = mt.sha256_digest(data)
    client.push_blob(repository, data, digest)
    return {"digest": digest, "size": len(data)}


def _platform_manifest(
    client: RegistryClient,
    repository: str,
    platform: str,
    layers: int,
    layer_size: int,
    docker: bool,
) -> tuple[Manifest, list[str]]:
    os_, _, arch = platform.partition("/")
    config = _push_json(
        client,
        repository,
        {
            "architecture": arch,
            "os": os_,
            "created": "2026-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": os.urandom(8).hex(),
        },
    )
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    pushed = [push_random_blob(client, repository, layer_size) for _ in range(layers)]
    body = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, **config},
        "layers": [{"mediaType": layer_type, "digest": d, "size": s} for d, s in pushed],
    }
    manifest = _to_manifest(body)
    client.put_manifest(ImageRef(client.host, repository, digest=manifest.digest), manifest)
    return manifest, [config["digest"]] + [d for d, _ in pushed]


def _to_manifest(body: dict[str, Any]) -> Manifest:
    return Manifest.from_bytes(json.dumps(body, indent=2).encode(), str(body["mediaType"]))


def push_referrer(
    registries: Registries,
    ref: ImageRef,
    subject: Manifest,
    artifact_type: str = SBOM_TYPE,
    payload: bytes | None = None,
) -> str:
    """Push an OCI artifact whose ``subject`` is ``subject``; maintain the fallback tag."""
    client = registries.client(ref.registry)
    data = payload if payload is not None else json.dumps({"nonce": os.urandom(8).hex()}).encode()
    layer_digest = mt.sha256_digest(data)
    client.push_blob(ref.repository, data, layer_digest)
    empty = _push_json(client, ref.repository, {})
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, **empty},
        "layers": [
            {"mediaType": "application/octet-stream", "digest": layer_digest, "size": len(data)}
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": len(subject.content),
        },
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }
    manifest = _to_manifest(body)
    _, handled = client.push_manifest(ref.with_tag(None).with_digest(manifest.digest), manifest)
    if not handled:
        update_fallback(client, ref.repository, subject.digest, Referrers((manifest.descriptor(),)))
    return manifest.digest


def push_test_image(
    registries: Registries,
    ref: ImageRef,
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
    layers: int = 2,
    layer_size: int = 4096,
    docker: bool = False,
    referrers: bool = True,
) -> PushedImage:
    """Push a random multi-platform image to ``ref`` (tagged if it names a tag)."""
    client = registries.client(ref.registry)
    children: list[Manifest] = []
    blobs: list[str] = []
    entries: list[dict[str, Any]] = []
    for platform in platforms:
        manifest, named = _platform_manifest(
            client, ref.repository, platform, layers, layer_size, docker
        )
        children.append(manifest)
        blobs += named
        os_, _, arch = platform.partition("/")
        entries.append(
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.content),
                "platform": {"architecture": arch, "os": os_},
            }
        )
    index = _to_manifest(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_LIST if docker else mt.OCI_INDEX,
            "manifests": entries,
        }
    )
    client.put_manifest(ref.with_tag(None).with_digest(index.digest), index)
    pushed: list[str] = []
    if referrers:
        pushed.append(push_referrer(registries, ref, index, SBOM_TYPE))
        pushed.append(push_referrer(registries, ref, children[0], SIGNATURE_TYPE))
    if ref.tag is not None:
        client.put_manifest(ref.with_digest(None), index)
    return PushedImage(
        index.digest,
        len(index.content),
        index.media_type,
        tuple(m.digest for m in children),
        tuple(blobs),
        len(pushed),
        tuple(pushed),
    )


def push_images(
    registries: Registries,
    host: str,
    count: int,
    *,
    repos: int = 4,
    prefix: str = "test",
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
    layer_size: int = 2048,
    referrers: bool = True,
) -> dict[ImageRef, PushedImage]:
    """``count`` images of one layer each spread over ``repos`` repositories of ``host``
    (``<prefix>/app000:v0``, ``<prefix>/app001:v0``, ...), for bursts, load and faults."""
    pushed = {}
    for i in range(count):
        ref = ImageRef(host, f"{prefix}/app{i % repos:03d}", f"v{i // repos}")
        pushed[ref] = push_test_image(
            registries,
            ref,
            platforms=platforms,
            layers=1,
            layer_size=layer_size,
            referrers=referrers,
        )
    return pushed


SEED_CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
).encode()
SEED_LAYER = b"tiny layer\n" * 8


def seed_manifest(variant: int) -> Manifest:
    """The tiny image ``seed`` pushes for ``variant``: the same bytes every time."""
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG,
            "digest": mt.sha256_digest(SEED_CONFIG),
            "size": len(SEED_CONFIG),
        },
        "layers": [
            {
                "mediaType": OCI_LAYER,
                "digest": mt.sha256_digest(SEED_LAYER),
                "size": len(SEED_LAYER),
            }
        ],
        "annotations": {"seed.variant": str(variant)},
    }
    return Manifest.from_bytes(json.dumps(body, sort_keys=True).encode(), mt.OCI_MANIFEST)


def manifest_digest(variant: int) -> str:
    return seed_manifest(variant).digest


def _seed_blobs(client: RegistryClient, repository: str, home: str) -> None:
    for data in (SEED_CONFIG, SEED_LAYER):
        digest = mt.sha256_digest(data)
        if repository == home:
            client.push_blob(repository, data, digest)
            continue
        mounted, location = client.start_upload(repository, mount=digest, source=home)
        if not mounted:
            client.finish_upload(repository, location, digest, data, len(data))


def seed(
    registries: Registries,
    host: str,
    images: Iterable[tuple[str, str, int]],
    concurrency: int = 8,
) -> int:
    """Push ``(repository, tag, variant)`` tiny images to ``host``; returns how many."""
    by_repo: dict[str, list[tuple[str, int]]] = {}
    for repository, tag, variant in images:
        by_repo.setdefault(repository, []).append((tag, variant))
    if not by_repo:
        return 0
    client = registries.client(host)
    home = min(by_repo)
    _seed_blobs(client, home, home)

    def push_repo(repository: str) -> int:
        if repository != home:
            _seed_blobs(client, repository, home)
        for tag, variant in by_repo[repository]:
            client.put_manifest(ImageRef(host, repository, tag), seed_manifest(variant))
        return len(by_repo[repository])

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(push_repo, sorted(by_repo)))
