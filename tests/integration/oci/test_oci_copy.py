"""Copy between real distribution registries: every manifest and blob byte-identical."""

from __future__ import annotations

import threading

import pytest

from devstack.localstack import Registry
from devstack.testimages import push_test_image
from replicator.adapters.oci.client import RegistryClient
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.referrers import fallback_tag, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.domain.manifests import Manifest, blobs_of, children_of
from replicator.domain.reference import ImageRef


def _identical(registries: Registries, src: ImageRef, dst: ImageRef, digest: str) -> int:
    """Assert the manifest tree under ``digest`` is byte-identical; count manifests seen."""
    source, target = registries.client(src.registry), registries.client(dst.registry)
    pending, seen = [digest], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        a = source.get_manifest(ImageRef(src.registry, src.repository, digest=current))
        b = target.get_manifest(ImageRef(dst.registry, dst.repository, digest=current))
        assert (a.content, a.media_type) == (b.content, b.media_type)
        pending += children_of(a)
        for blob in blobs_of(a):
            assert target.head_blob(dst.repository, blob) == source.head_blob(src.repository, blob)
        for referrer in list_referrers(registries, source, src.repository, current).digests:
            pending.append(referrer)
    return len(seen)


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_copy_multi_platform_image_with_referrers(
    registry_pair: tuple[Registry, Registry], registries: Registries, docker: bool
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src, docker=docker)
    dst = ImageRef(target.host, "mirror/app", "v1")

    report = ImageCopier(registries).copy_image(src, dst)

    assert report.digest == pushed.digest
    assert not report.already_present
    assert report.referrers_copied == 2
    # + each referrer's config and layer (the empty config is the same blob twice)
    assert report.blobs_copied + report.blobs_skipped == len(set(pushed.blobs)) + 4
    tagged = registries.client(target.host).head_manifest(dst)
    assert tagged is not None
    assert tagged.digest == pushed.digest
    # index + 2 platforms + 2 referrers, all identical
    assert _identical(registries, src, dst, pushed.digest) == 5
    # the fallback tag index on the target is the source's, byte for byte
    for subject in (pushed.digest, pushed.manifests[0]):
        tag = fallback_tag(subject)
        a = registries.client(source.host).get_manifest(src.with_tag(tag))
        b = registries.client(target.host).get_manifest(dst.with_tag(tag))
        assert a.content == b.content


def test_second_copy_is_a_noop_in_three_target_requests(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src)
    dst = ImageRef(target.host, "team/app", "v1")
    ImageCopier(registries).copy_image(src, dst)

    with Registries() as fresh:
        report = ImageCopier(fresh).copy_image(src, dst)
        assert report.already_present
        assert report.digest == pushed.digest
        assert fresh.client(target.host).requests <= 3


def test_copy_by_digest_leaves_no_tag(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src, referrers=False)
    dst = ImageRef(target.host, "team/app", digest=pushed.digest)

    report = ImageCopier(registries).copy_image(src.with_digest(pushed.digest).with_tag(None), dst)

    assert report.digest == pushed.digest
    assert registries.client(target.host).head_manifest(dst) is not None
    tags = registries.client(target.host).request("GET", "/v2/team/app/tags/list").json()
    assert not tags.get("tags")


def test_blob_held_in_another_repository_is_mounted(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src, referrers=False)
    copier = ImageCopier(registries)
    copier.copy_image(src, ImageRef(target.host, "one/app", "v1"))

    report = copier.copy_image(src, ImageRef(target.host, "two/app", "v1"))

    assert report.blobs_mounted == len(set(pushed.blobs))
    assert report.blobs_copied == 0
    assert _identical(registries, src, ImageRef(target.host, "two/app", "v1"), pushed.digest) == 3


def test_manifest_bytes_pushed_unchanged(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src, referrers=False)
    ImageCopier(registries).copy_image(src, ImageRef(target.host, "team/app", "v1"))
    got = registries.client(target.host).get_manifest(ImageRef(target.host, "team/app", "v1"))
    assert isinstance(got, Manifest)
    assert got.digest == pushed.digest
    assert b"\n  " in got.content  # the indented JSON as pushed, not re-serialised


def test_referrers_added_later_are_copied_on_their_own(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    from devstack.testimages import push_referrer

    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    dst = ImageRef(target.host, "team/app", "v1")
    pushed = push_test_image(registries, src, referrers=False)
    copier = ImageCopier(registries)
    copier.copy_image(src, dst)
    client = registries.client(source.host)
    index = client.get_manifest(src)
    child = client.get_manifest(src.with_digest(pushed.manifests[1]).with_tag(None))
    signature = push_referrer(registries, src, index)
    push_referrer(registries, src, child)

    assert copier.copy_referrers(src, dst) == 2

    there = list_referrers(registries, registries.client(target.host), "team/app", pushed.digest)
    assert there.digests == {signature}
    push_referrer(registries, src, index)  # one more on the index: copy_image notices
    report = copier.copy_image(src, dst)
    assert not report.already_present
    assert report.referrers_copied == 1
    assert _identical(registries, src, dst, pushed.digest) == 6
    assert copier.copy_image(src, dst).already_present


def test_a_dangling_referrer_is_left_out(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    src = ImageRef(source.host, "team/app", "v1")
    pushed = push_test_image(registries, src)
    gone = pushed.referrer_digests[0]
    registries.client(source.host).delete_manifest(src.with_tag(None).with_digest(gone))
    dst = ImageRef(target.host, "team/app", "v1")

    report = ImageCopier(registries).copy_image(src, dst)

    assert report.referrers_copied == 1
    there = list_referrers(registries, registries.client(target.host), "team/app", pushed.digest)
    assert gone not in there.digests


@pytest.mark.parametrize(("concurrency", "at_once"), [(8, 4), (1, 1)])
def test_platforms_are_looked_up_together(
    registry_pair: tuple[Registry, Registry],
    registries: Registries,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
    at_once: int,
) -> None:
    """The platforms of an index are looked up in the target (and fetched from the source)
    all at once, a round trip per index rather than two per platform; still all copied."""
    source, target = registry_pair
    platforms = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")
    src = ImageRef(source.host, "team/wide", "v1")
    pushed = push_test_image(registries, src, platforms=platforms, referrers=False)
    dst = ImageRef(target.host, "mirror/wide", "v1")
    in_flight, most = 0, 0
    lock = threading.Lock()
    barrier = threading.Barrier(at_once, timeout=10)  # released once `at_once` HEADs wait
    head = RegistryClient.head_manifest

    def counted(client: RegistryClient, ref: ImageRef) -> object:
        nonlocal in_flight, most
        if client.host != target.host or ref.digest not in pushed.manifests:
            return head(client, ref)
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        barrier.wait()
        try:
            return head(client, ref)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(RegistryClient, "head_manifest", counted)
    ImageCopier(registries, concurrency=concurrency).copy_image(src, dst)
    assert most == at_once
    assert _identical(registries, src, dst, pushed.digest) == 1 + len(platforms)


def test_referrers_of_different_subjects_are_copied_together(
    registry_pair: tuple[Registry, Registry],
    registries: Registries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SBOM on the index and the signature on a platform are fetched at the same time
    (each round trip across regions counts), and both land with their fallback indexes."""
    source, target = registry_pair
    src = ImageRef(source.host, "team/signed", "v1")
    pushed = push_test_image(registries, src)
    client = registries.client(source.host)
    referrers = {
        d
        for subject in (pushed.digest, *pushed.manifests)
        for d in list_referrers(registries, client, "team/signed", subject).digests
    }
    assert len(referrers) == 2
    barrier = threading.Barrier(2, timeout=10)
    get = RegistryClient.get_manifest

    def together(self: RegistryClient, ref: ImageRef) -> object:
        if self.host == source.host and ref.digest in referrers:
            barrier.wait()  # released only when both referrers are being fetched
        return get(self, ref)

    monkeypatch.setattr(RegistryClient, "get_manifest", together)
    dst = ImageRef(target.host, "mirror/signed", "v1")
    report = ImageCopier(registries).copy_image(src, dst)
    assert report.referrers_copied == 2
    monkeypatch.undo()
    assert _identical(registries, src, dst, pushed.digest) == 5
