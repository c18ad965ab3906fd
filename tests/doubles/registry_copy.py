"""What the ARM double's ImportImage does to the data: a plain-HTTP copy between local
distribution registries of one image (an index with its children, their blobs), then the
target tags. Referrers do not move: ImportImage does not bring them either. A manifest
imported by digest that has a ``subject`` (a referrer imported on its own) is listed
among its subject's referrers, as ACR's referrers API lists every such manifest; the
distribution registry behind the double has no referrers API, so the double keeps the
subject's referrers tag index (distribution spec 1.1, "referrers tag schema").

Registries behind a token service (ACR-like, ``doubles.token_server``) are reached with
``BackendAuth``: ACR's own access to its storage, which no role assignment limits."""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping
from typing import Any

import httpx

MANIFEST_TYPES = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


INDEX = "application/vnd.oci.image.index.v1+json"


class BackendAuth(httpx.Auth):
    """Answers a registry's bearer challenge with ``mint(scope)`` for that host."""

    requires_request_body = True

    def __init__(self, minters: Mapping[str, Callable[[str], str]]) -> None:
        self.minters = dict(minters)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        mint = self.minters.get(request.url.netloc.decode())
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or mint is None or not challenge.startswith("Bearer"):
            return
        scope = re.search(r'scope="([^"]*)"', challenge)
        request.headers["Authorization"] = f"Bearer {mint(scope.group(1) if scope else '')}"
        yield request


def copy_image(
    src_host: str,
    dst_host: str,
    image: str,
    tags: list[str],
    body: dict[str, Any],
    *,
    auth: httpx.Auth | None = None,
) -> None:
    """Copy ``image`` (``repo@digest`` or ``repo:tag``) between plain-HTTP registries:
    manifests (an index with its children) and blobs, then the target tags. No referrers."""
    if "@" in image:
        repo, ref = image.split("@", 1)
    else:
        repo, _, ref = image.partition(":")
        ref = ref or "latest"
    with httpx.Client(timeout=30, auth=auth) as http:
        digest = _copy_manifest(http, src_host, dst_host, repo, ref)
        _index_referrer(http, dst_host, repo, digest)
        targets = [t.partition(":") for t in tags] or [
            (r, "", "") for r in body.get("untaggedTargetRepositories") or [repo]
        ]
        for dst_repo, _, tag in targets:
            if dst_repo != repo:
                _copy_manifest(http, src_host, dst_host, repo, digest, dst_repo=dst_repo)
            if tag:
                _copy_manifest(http, src_host, dst_host, repo, digest, dst_repo=dst_repo, tag=tag)


def _copy_manifest(
    http: httpx.Client,
    src: str,
    dst: str,
    repo: str,
    ref: str,
    *,
    dst_repo: str | None = None,
    tag: str | None = None,
) -> str:
    dst_repo = dst_repo or repo
    got = http.get(f"http://{src}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_TYPES})
    if got.status_code == 404:
        raise LookupError(ref)
    got.raise_for_status()
    digest = got.headers["Docker-Content-Digest"]
    manifest = got.json()
    for child in manifest.get("manifests", []):
        _copy_manifest(http, src, dst, repo, child["digest"], dst_repo=dst_repo)
    for blob in [manifest.get("config"), *manifest.get("layers", [])]:
        if blob:
            _copy_blob(http, src, dst, repo, dst_repo, blob["digest"])
    put = http.put(
        f"http://{dst}/v2/{dst_repo}/manifests/{tag or digest}",
        content=got.content,
        headers={"Content-Type": got.headers["Content-Type"]},
    )
    put.raise_for_status()
    return digest


def _index_referrer(http: httpx.Client, host: str, repo: str, digest: str) -> None:
    """Add ``digest`` to its subject's referrers tag index when it has a subject."""
    got = http.get(
        f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}
    )
    got.raise_for_status()
    manifest = got.json()
    subject = manifest.get("subject")
    if not isinstance(subject, dict):
        return
    descriptor = {
        "mediaType": got.headers["Content-Type"],
        "digest": digest,
        "size": len(got.content),
    }
    kind = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
    if kind:
        descriptor["artifactType"] = kind
    if manifest.get("annotations"):
        descriptor["annotations"] = manifest["annotations"]
    tag = str(subject["digest"]).replace(":", "-")
    index_url = f"http://{host}/v2/{repo}/manifests/{tag}"
    current = http.get(index_url, headers={"Accept": INDEX})
    listed = current.json().get("manifests", []) if current.status_code == 200 else []
    if any(d.get("digest") == digest for d in listed):
        return
    body = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [*listed, descriptor]}
    http.put(index_url, json=body, headers={"Content-Type": INDEX}).raise_for_status()


def _copy_blob(
    http: httpx.Client, src: str, dst: str, repo: str, dst_repo: str, digest: str
) -> None:
    if http.head(f"http://{dst}/v2/{dst_repo}/blobs/{digest}").status_code == 200:
        return
    data = http.get(f"http://{src}/v2/{repo}/blobs/{digest}", follow_redirects=True)
    data.raise_for_status()
    start = http.post(f"http://{dst}/v2/{dst_repo}/blobs/uploads/")
    start.raise_for_status()
    location = start.headers["Location"]
    if location.startswith("/"):
        location = f"http://{dst}{location}"
    sep = "&" if "?" in location else "?"
    http.put(f"{location}{sep}digest={digest}", content=data.content).raise_for_status()
