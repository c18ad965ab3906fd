"""Seed a real (plain-HTTP, loopback) registry with many tiny images, fast.

Every image shares one config and one small layer: the blobs are uploaded once per
registry and cross-repository mounted elsewhere, so a repository costs two mounts and a
manifest PUT per tag. ``variant`` goes into an annotation, so two variants of a tag are
two different manifest digests over the same blobs (how stale tags are planted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}})
LAYER = b"tiny layer\n" * 8


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(variant: int) -> bytes:
    config, layer = CONFIG.encode(), LAYER
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _digest(layer),
                "size": len(layer),
            }
        ],
        "annotations": {"seed.variant": str(variant)},
    }
    return json.dumps(body, sort_keys=True).encode()


def manifest_digest(variant: int) -> str:
    return _digest(manifest(variant))


def _upload(client: httpx.Client, repository: str, data: bytes) -> None:
    start = client.post(f"/v2/{repository}/blobs/uploads/")
    start.raise_for_status()
    location = start.headers["Location"]
    joiner = "&" if "?" in location else "?"
    done = client.put(f"{location}{joiner}digest={_digest(data)}", content=data)
    done.raise_for_status()


def _blobs(client: httpx.Client, repository: str, home: str) -> None:
    for data in (CONFIG.encode(), LAYER):
        if repository == home:
            _upload(client, repository, data)
            continue
        mounted = client.post(
            f"/v2/{repository}/blobs/uploads/", params={"mount": _digest(data), "from": home}
        )
        if mounted.status_code != 201:
            _upload(client, repository, data)


def seed(host: str, images: Iterable[tuple[str, str, int]], concurrency: int = 8) -> int:
    """Push ``(repository, tag, variant)`` images to ``host``; returns how many."""
    by_repo: dict[str, list[tuple[str, int]]] = {}
    for repository, tag, variant in images:
        by_repo.setdefault(repository, []).append((tag, variant))
    if not by_repo:
        return 0
    with httpx.Client(base_url=f"http://{host}", timeout=30) as client:
        home = min(by_repo)
        _blobs(client, home, home)

        def push_repo(repository: str) -> int:
            if repository != home:
                _blobs(client, repository, home)
            for tag, variant in by_repo[repository]:
                response = client.put(
                    f"/v2/{repository}/manifests/{tag}",
                    content=manifest(variant),
                    headers={"Content-Type": MANIFEST_TYPE},
                )
                response.raise_for_status()
            return len(by_repo[repository])

        with ThreadPoolExecutor(concurrency) as pool:
            return sum(pool.map(push_repo, sorted(by_repo)))


def delete_tag_manifest(host: str, repository: str, variant: int) -> None:
    """Delete a manifest by digest (needs a registry with deletes enabled)."""
    with httpx.Client(base_url=f"http://{host}", timeout=30) as client:
        client.delete(f"/v2/{repository}/manifests/{manifest_digest(variant)}").raise_for_status()
