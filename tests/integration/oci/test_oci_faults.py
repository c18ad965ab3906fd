"""Faults on cue through a proxy in front of a real registry: retried, or failed cleanly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.faulty_proxy import Fault, FaultyProxy
from devstack.localstack import Registry
from devstack.testimages import PushedImage, push_test_image
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.adapters.oci.transport import RetryPolicy
from replicator.domain.errors import DigestMismatchError, TransientRegistryError
from replicator.domain.reference import ImageRef

BLOB_GET = r"/v2/team/app/blobs/sha256:"


@pytest.fixture
def proxied(registry_pair: tuple[Registry, Registry]) -> Iterator[tuple[FaultyProxy, Registry]]:
    """(a proxy in front of the source, the target)."""
    source, target = registry_pair
    with FaultyProxy(source.host) as proxy:
        yield proxy, target


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def registries(sleeps: list[float]) -> Iterator[Registries]:
    with Registries(retry=RetryPolicy(attempts=4, sleep=sleeps.append)) as running:
        yield running


def _push(registries: Registries, proxy: FaultyProxy) -> PushedImage:
    return push_test_image(
        registries, ImageRef(proxy.host, "team/app", "v1"), layer_size=256 * 1024
    )


def _copy(registries: Registries, proxy: FaultyProxy, target: Registry) -> str:
    src = ImageRef(proxy.host, "team/app", "v1")
    return ImageCopier(registries).copy_image(src, ImageRef(target.host, "team/app", "v1")).digest


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GET", BLOB_GET, "status", times=2, status=429, headers={"Retry-After": "1"}),
        Fault("GET", BLOB_GET, "status", times=3, status=503),
        Fault("GET", BLOB_GET, "reset", times=2),
        Fault("GET", BLOB_GET, "truncate", times=2),
        Fault("GET", r"/manifests/", "status", times=2, status=502),
        Fault("GET", r"/manifests/sha256:", "reset", times=1),
        Fault("GET", r"/referrers/", "status", times=1, status=500),
    ],
    ids=[
        "429-retry-after",
        "503-burst",
        "reset-mid-blob",
        "truncated-blob",
        "502-manifest",
        "reset-mid-manifest",
        "500-head",
    ],
)
def test_transient_source_faults_are_retried(
    proxied: tuple[FaultyProxy, Registry], registries: Registries, sleeps: list[float], fault: Fault
) -> None:
    proxy, target = proxied
    pushed = _push(registries, proxy)
    proxy.add(fault)

    assert _copy(registries, proxy, target) == pushed.digest

    assert fault.fired == fault.times
    assert len(sleeps) >= fault.times
    if "Retry-After" in fault.headers:
        assert sleeps[: fault.times] == [1.0] * fault.times
    tagged = registries.client(target.host).head_manifest(ImageRef(target.host, "team/app", "v1"))
    assert tagged is not None
    assert tagged.digest == pushed.digest


def test_target_upload_faults_are_retried(
    registry_pair: tuple[Registry, Registry], registries: Registries
) -> None:
    source, target = registry_pair
    with FaultyProxy(target.host) as proxy:
        src = ImageRef(source.host, "team/app", "v1")
        pushed = push_test_image(registries, src, layer_size=256 * 1024)
        put = proxy.add(Fault("PUT", r"/blobs/uploads/", "status", times=2, status=503))
        post = proxy.add(Fault("POST", r"/blobs/uploads/", "status", times=1, status=429))
        report = ImageCopier(registries).copy_image(src, ImageRef(proxy.host, "team/app", "v1"))
    assert report.digest == pushed.digest
    assert (put.fired, post.fired) == (2, 1)


def test_retries_are_bounded(proxied: tuple[FaultyProxy, Registry], registries: Registries) -> None:
    proxy, target = proxied
    _push(registries, proxy)
    proxy.add(Fault("GET", BLOB_GET, "status", times=-1, status=503))
    with pytest.raises(TransientRegistryError) as failed:
        _copy(registries, proxy, target)
    assert failed.value.status == 503
    assert failed.value.reference
    assert failed.value.operation == "GET blob"
    assert (
        registries.client(target.host).head_manifest(ImageRef(target.host, "team/app", "v1"))
        is None
    )


@pytest.mark.parametrize("what", [BLOB_GET, r"/manifests/sha256:"], ids=["blob", "manifest"])
def test_lying_source_fails_and_leaves_the_target_tag_untouched(
    proxied: tuple[FaultyProxy, Registry], registries: Registries, what: str
) -> None:
    proxy, target = proxied
    old = _push(registries, proxy)
    _copy(registries, proxy, target)
    new = _push(registries, proxy)  # the tag moves on in the source
    proxy.add(Fault("GET", what, "corrupt", times=-1))

    with pytest.raises(DigestMismatchError) as failed:
        _copy(registries, proxy, target)

    assert failed.value.reference
    tagged = registries.client(target.host).head_manifest(ImageRef(target.host, "team/app", "v1"))
    assert tagged is not None
    assert tagged.digest == old.digest != new.digest


def _fault_mix() -> list[Fault]:
    """Issue 14 item 8: 429 (Retry-After: 1) on every 5th request, 503 on every 7th."""
    return [
        Fault("*", r"", "status", times=-1, every=5, status=429, headers={"Retry-After": "1"}),
        Fault("*", r"", "status", times=-1, every=7, status=503),
    ]


@pytest.mark.parametrize("run", range(20), ids=[f"run{n:02d}" for n in range(20)])
def test_copy_comes_through_a_sustained_fault_mix_every_time(
    registry_pair: tuple[Registry, Registry], run: int
) -> None:
    """Both registries behind the mix, and every source blob cut once mid-body: the copy
    succeeds, digest for digest, each of 20 runs (each blob: its HEAD, upload start and
    GET retried where they fail, the whole attempt again only when the stream broke, all
    from one budget; the pauses are recorded, not slept)."""
    from devstack.demo import compare

    source, target = registry_pair
    sleeps: list[float] = []
    with (
        FaultyProxy(source.host) as src_proxy,
        FaultyProxy(target.host) as dst_proxy,
        Registries(retry=RetryPolicy(sleep=sleeps.append)) as registries,
    ):
        src = ImageRef(src_proxy.host, "team/app", "v1")
        pushed = push_test_image(registries, src, layers=3, layer_size=256 * 1024)
        faults = [*_fault_mix(), *_fault_mix()]
        for fault in faults[:2]:
            src_proxy.add(fault)
        cut = src_proxy.add(Fault("GET", r"/blobs/sha256:", "reset", times=1, per_path=True))
        for fault in faults[2:]:
            dst_proxy.add(fault)

        dst = ImageRef(dst_proxy.host, "team/app", "v1")
        report = ImageCopier(registries).copy_image(src, dst)

        src_proxy.clear()
        dst_proxy.clear()
        assert report.digest == pushed.digest
        cut_blobs = {path.rsplit("/", 1)[1] for path in cut.by_path}
        assert set(pushed.blobs) <= cut_blobs  # every blob was cut once
        assert set(cut.by_path.values()) == {1}
        assert all(f.fired for f in faults)  # the mix really hit both sides
        assert 1.0 in sleeps  # Retry-After honoured
        checks = compare(registries, src.with_digest(pushed.digest), dst, pushed.referrer_digests)
        assert checks and all(c.identical for c in checks), [c for c in checks if not c.identical]
