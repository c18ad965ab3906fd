"""Manifests as fetched: the exact bytes, their media type and verified digest.

A manifest is never re-serialised: what was fetched is what gets pushed, so the digest in
the target is the digest in the source. The parsed JSON is only read, to find children,
blobs and the ``subject``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from replicator.domain.errors import DigestMismatchError, PermanentRegistryError
from replicator.domain.reference import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT = ", ".join(sorted(MANIFEST_TYPES))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The exact bytes of a manifest, with its media type and digest."""

    content: bytes = field(repr=False)
    media_type: str
    digest: str

    @classmethod
    def from_bytes(
        cls, content: bytes, media_type: str | None = None, *, expected: str | None = None
    ) -> Manifest:
        """Check size, type and (when ``expected`` is given) the digest of ``content``."""
        if len(content) > MAX_MANIFEST_BYTES:
            raise PermanentRegistryError(
                f"manifest of {len(content)} bytes exceeds the {MAX_MANIFEST_BYTES} byte limit"
            )
        algorithm = expected.split(":", 1)[0] if expected else "sha256"
        actual = digest_of(content, algorithm)
        if expected is not None and actual != expected:
            raise DigestMismatchError(
                f"manifest content has digest {actual}, not {expected}", reference=expected
            )
        return cls(content, _media_type(content, media_type), actual)

    @property
    def json(self) -> dict[str, Any]:
        return _parse(self.content)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def subject(self) -> str | None:
        subject = self.json.get("subject")
        return _descriptor_digest(subject) if isinstance(subject, dict) else None

    def descriptor(self) -> dict[str, Any]:
        """The OCI descriptor of this manifest, as a referrers index lists it."""
        body = self.json
        found: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.content),
        }
        config = body.get("config") if isinstance(body.get("config"), dict) else {}
        artifact_type = body.get("artifactType") or (config or {}).get("mediaType")
        if artifact_type:
            found["artifactType"] = artifact_type
        if isinstance(body.get("annotations"), dict) and body["annotations"]:
            found["annotations"] = body["annotations"]
        return found


def _parse(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise PermanentRegistryError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise PermanentRegistryError("manifest is not a JSON object")
    return body


def _media_type(content: bytes, header: str | None) -> str:
    body = _parse(content)
    declared = body.get("mediaType")
    header = (header or "").split(";", 1)[0].strip() or None
    media_type = declared if isinstance(declared, str) and declared else header
    if media_type is None:  # OCI allows an absent mediaType: tell by shape
        media_type = OCI_INDEX if "manifests" in body else OCI_MANIFEST
    if media_type in SCHEMA1 or body.get("schemaVersion") == 1:
        raise PermanentRegistryError(
            "Docker schema 1 manifests are not supported (deprecated; rebuild or re-push the image)"
        )
    if media_type not in MANIFEST_TYPES:
        raise PermanentRegistryError(f"unsupported manifest media type {media_type!r}")
    return media_type


def _descriptor_digest(descriptor: dict[str, Any]) -> str:
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise PermanentRegistryError(f"manifest names an invalid digest {digest!r}")
    return digest


def child_descriptors(manifest: Manifest) -> list[dict[str, Any]]:
    if not manifest.is_index:
        return []
    found = manifest.json.get("manifests")
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def children_of(manifest: Manifest) -> list[str]:
    """The digests of the manifests an index lists (none for an image manifest)."""
    return [_descriptor_digest(d) for d in child_descriptors(manifest)]


def blob_descriptors(manifest: Manifest) -> list[tuple[str, int]]:
    """``(digest, size)`` of the config and every layer of an image manifest."""
    if manifest.is_index:
        return []
    body = manifest.json
    found = [body["config"]] if isinstance(body.get("config"), dict) else []
    layers = body.get("layers")
    found += [d for d in layers if isinstance(d, dict)] if isinstance(layers, list) else []
    blobs: list[tuple[str, int]] = []
    for descriptor in found:
        if descriptor.get("urls"):  # foreign layers stay where they are
            continue
        size = descriptor.get("size")
        blobs.append((_descriptor_digest(descriptor), size if isinstance(size, int) else -1))
    return blobs


def blobs_of(manifest: Manifest) -> list[str]:
    """The digests of the blobs (config, layers) an image manifest names."""
    return [digest for digest, _ in blob_descriptors(manifest)]
