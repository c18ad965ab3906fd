"""Helpers for the end-to-end fault tests: pushes, what really got copied, DR checks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from devstack.demo import compare
from devstack.localrun import QueueOptions
from devstack.testimages import PushedImage
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import RegistryError
from replicator.domain.reference import ImageRef

ROOT = Path(__file__).resolve().parents[2]

PATIENT = QueueOptions(
    batch_size=8, visibility_timeout=0, max_dequeue_count=5, max_polling_interval=0.1
)


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    """A worker process (tests/e2e/worker_main.py) on ``env`` over this environment."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("worker_main.py"))],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def differences(
    registries: Registries, images: dict[ImageRef, PushedImage], target_host: str
) -> list[str]:
    """What is not byte-identical in the target: manifests, blobs, referrers, tags."""
    bad = []
    for ref, image in images.items():
        dst = ImageRef(target_host, ref.repository, ref.tag, image.digest)
        try:
            checks = compare(registries, ref.with_digest(image.digest), dst, image.referrer_digests)
        except RegistryError as exc:
            bad.append(f"{dst}: {exc}")
            continue
        bad += [f"{dst}: {c.what}" for c in checks if not c.identical]
    return bad


def tags(registries: Registries, host: str, repository: str) -> list[str]:
    body = registries.client(host).request("GET", f"/v2/{repository}/tags/list").json()
    return sorted(body.get("tags") or [])


def catalog(registries: Registries, host: str) -> list[str]:
    return sorted(registries.client(host).request("GET", "/v2/_catalog").json()["repositories"])


def same_content(registries: Registries, source: str, target: str, repos: Iterable[str]) -> None:
    """The target holds exactly the source's repositories and tags (fallback tags of
    referrers included): nothing more, nothing less."""
    assert catalog(registries, target) == catalog(registries, source)
    for repo in repos:
        assert tags(registries, target, repo) == tags(registries, source, repo), repo
