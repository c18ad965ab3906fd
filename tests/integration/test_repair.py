"""What a DR copy loses after the fact, and how it is made whole again, on real registries
(plain distribution, whose referrers are the ``sha256-<hex>`` fallback tag, and the same
behind ``devstack.referrers_api``, which has the OCI 1.1 referrers API), Azurite's queue
and status table, the worker draining the queue:

- a layer, a config blob or a referrer's blob DR lost under manifests it still holds: the
  copy engine's repair restores them (a plain copy takes the image for done), and the
  reconcile verify sweep's repair job makes ``verify`` pass again;
- a referrer in a DR without the API whose copy was cut off between its manifest and its
  subject's referrers tag: reconcile's job lists it, and the next pass has nothing to do;
- a referrer the source deleted, under ``propagate``: deleted in DR and gone from its
  subject's referrers tag there, so the next pass has nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devstack.localstack import Azurite, LocalStack, Registry
from devstack.localworker import drain, worker_runtime
from devstack.referrers_api import shaped_pair
from devstack.testimages import SIGNATURE_TYPE, PushedImage, push_referrer, push_test_image
from replicator.adapters.oci import copy as copy_engine
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.referrers import fallback_tag, list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.reconcile import run_reconcile
from replicator.cli import main
from replicator.domain.errors import NotFoundError
from replicator.domain.manifests import blob_descriptors
from replicator.domain.model import Outcome
from replicator.domain.reference import ImageRef

pytestmark = pytest.mark.integration
REPO = "team/app"


@pytest.fixture(params=["fallback", "api"])
def pair(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """A source and a DR of the same shape (``api``: with the referrers API)."""
    with shaped_pair(stack, request.param, request.param) as started:
        yield started


@pytest.fixture
def to_fallback(stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    """A source with the referrers API (it forgets a deleted referrer), a DR without it
    (DR keeps the referrers tag itself)."""
    with shaped_pair(stack, "api", "fallback") as started:
        yield started


def delete_blob(registries: Registries, host: str, digest: str) -> None:
    response = registries.client(host).request("DELETE", f"/v2/{REPO}/blobs/{digest}")
    assert response.status_code == 202, response.status_code


def verify(capsys: pytest.CaptureFixture[str], source: Registry, target: Registry) -> int:
    code = main(["verify", "--source", source.host, "--target", target.host, "--json"])
    capsys.readouterr()
    return code


def listed(registries: Registries, host: str, subject: str) -> set[str]:
    found = list_referrers(registries, registries.client(host), REPO, subject)
    return set(found.digests)


def index_lists(registries: Registries, host: str, subject: str) -> set[str]:
    """What DR's referrers tag of ``subject`` lists (the tag itself, not the API)."""
    ref = ImageRef(host, REPO, fallback_tag(subject))
    index = registries.client(host).get_manifest(ref)
    return {str(d.get("digest")) for d in index.json.get("manifests") or []}


def lose_blobs(
    registries: Registries, source: Registry, target: Registry, image: PushedImage
) -> set[str]:
    """Delete from DR a layer of the first platform, the config of the second and the
    blob of the index's first referrer; the digests deleted."""
    ref = ImageRef(source.host, REPO, digest=image.referrer_digests[0])
    referrer = registries.client(source.host).get_manifest(ref)
    signed = [digest for digest, _ in blob_descriptors(referrer)]
    half = len(image.blobs) // 2
    lost = {image.blobs[1], image.blobs[half], signed[-1]}
    for digest in lost:
        delete_blob(registries, target.host, digest)
    return lost


def test_the_copy_engine_repairs_blobs_lost_under_manifests_dr_holds(
    pair: tuple[Registry, Registry], registries: Registries, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = pair
    src, dst = ImageRef(source.host, REPO, "v1"), ImageRef(target.host, REPO, "v1")
    image = push_test_image(registries, src)
    copier = ImageCopier(registries)
    copier.copy_image(src, dst)
    assert verify(capsys, source, target) == 0
    lost = lose_blobs(registries, source, target, image)
    assert verify(capsys, source, target) == 1

    plain = copier.copy_image(src, dst)  # takes what DR holds for done
    assert plain.already_present and verify(capsys, source, target) == 1

    repaired = copier.copy_image(src, dst, repair=True)
    assert repaired.blobs_copied + repaired.blobs_mounted == len(lost)
    assert (repaired.manifests_copied, repaired.referrers_copied) == (0, 0)  # none was lost
    assert repaired.extra["repaired"] == f"repaired: 0 manifests, {len(lost)} blobs restored"
    for digest in lost:
        assert registries.client(target.host).head_blob(REPO, digest) is not None
    assert verify(capsys, source, target) == 0
    again = copier.copy_image(src, dst, repair=True)  # nothing left to restore
    assert (again.blobs_copied, again.blobs_mounted, again.manifests_copied) == (0, 0, 0)


def test_a_repair_restores_a_lost_child_and_its_referrer_and_tags_last(
    pair: tuple[Registry, Registry], registries: Registries, capsys: pytest.CaptureFixture[str]
) -> None:
    """DR lost a platform manifest and a referrer; the tag is not DR's yet: the repair
    pushes both back and writes the tag only once the image is whole."""
    source, target = pair
    src, dst = ImageRef(source.host, REPO, "v1"), ImageRef(target.host, REPO, "v1")
    image = push_test_image(registries, src)
    ImageCopier(registries).copy_image(
        src.with_tag(None).with_digest(image.digest), dst.with_tag(None).with_digest(image.digest)
    )
    client = registries.client(target.host)
    client.delete_manifest(ImageRef(target.host, REPO, digest=image.manifests[1]))
    client.delete_manifest(ImageRef(target.host, REPO, digest=image.referrer_digests[1]))
    assert client.head_manifest(dst) is None

    repaired = ImageCopier(registries).copy_image(src, dst, repair=True)
    assert repaired.manifests_copied == 2  # the child and the referrer, nothing held
    head = client.head_manifest(dst)
    assert head is not None and head.digest == image.digest
    assert verify(capsys, source, target) == 0  # referrer parity included


def test_the_verify_sweeps_repair_job_restores_a_lost_layer(
    pair: tuple[Registry, Registry],
    fresh_azurite: Azurite,
    registries: Registries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = pair
    src, dst = ImageRef(source.host, REPO, "v1"), ImageRef(target.host, REPO, "v1")
    image = push_test_image(registries, src)
    ImageCopier(registries).copy_image(src, dst)
    layer = image.blobs[1]
    delete_blob(registries, target.host, layer)
    assert verify(capsys, source, target) == 1

    with worker_runtime(source, target, fresh_azurite, REPLICATOR_VERIFY_SWEEP="5") as (rt, _):
        found = run_reconcile(rt, sleep=lambda _s: None)
        (audit,) = found.verify
        assert {(f.kind, f.digest) for f in audit.findings.missing} == {("blob", layer)}
        assert [(j.digest, j.tag, j.repair) for j in found.jobs] == [
            (image.manifests[0], None, True)
        ]
        message = json.loads(found.jobs[0].to_json())
        assert message["repair"] is True  # what the queue carries to the worker
        stats = drain(rt)
        assert stats.poisoned == 0
        (row,) = rt.status.images(REPO, None)
        assert (row["jobDigest"], row["outcome"]) == (image.manifests[0], Outcome.COPIED.value)
        assert row["lastError"] == "repaired: 0 manifests, 1 blobs restored"
        assert verify(capsys, source, target) == 0
        again = run_reconcile(rt, sleep=lambda _s: None)
        assert (again.enqueued, again.jobs) == (0, ())


def test_a_referrer_cut_off_before_its_subjects_tag_is_listed_by_the_next_pass(
    to_fallback: tuple[Registry, Registry],
    fresh_azurite: Azurite,
    registries: Registries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signature's own copy into a DR without the API stops after its manifest PUT,
    before its subject's referrers tag lists it: DR holds it by digest, nobody lists it.
    Reconcile's job for it (by digest, DR holds it) lists it; the next pass enqueues
    nothing, and so does the one after."""
    source, target = to_fallback
    src, dst = ImageRef(source.host, REPO, "v1"), ImageRef(target.host, REPO, "v1")
    image = push_test_image(registries, src, referrers=False)
    copier = ImageCopier(registries)
    copier.copy_image(src, dst)
    subject = registries.client(source.host).get_manifest(src)
    signature = push_referrer(registries, src, subject, SIGNATURE_TYPE)

    def cut(*_args: object, **_kwargs: object) -> bool:
        raise KeyboardInterrupt  # the process stops here: nothing after the PUT ran

    monkeypatch.setattr(copy_engine, "update_fallback", cut)
    with pytest.raises(KeyboardInterrupt):
        copier.copy_image(
            src.with_tag(None).with_digest(signature), dst.with_tag(None).with_digest(signature)
        )
    monkeypatch.undo()
    assert registries.client(target.host).head_manifest(dst.with_tag(None).with_digest(signature))
    assert signature not in listed(registries, target.host, image.digest)

    with worker_runtime(source, target, fresh_azurite) as (rt, _):
        first = run_reconcile(rt, sleep=lambda _s: None)
        assert [(j.digest, j.tag, j.origin) for j in first.jobs] == [(signature, None, "reconcile")]
        assert drain(rt).poisoned == 0
        assert signature in index_lists(registries, target.host, image.digest)
        for _ in range(2):
            again = run_reconcile(rt, sleep=lambda _s: None)
            assert (again.enqueued, again.jobs) == (0, ())


def test_a_referrer_deleted_under_propagate_leaves_dr_s_referrers_tag(
    to_fallback: tuple[Registry, Registry], fresh_azurite: Azurite, registries: Registries
) -> None:
    source, target = to_fallback
    src = ImageRef(source.host, REPO, "v1")
    image = push_test_image(registries, src, referrers=False)
    subject = registries.client(source.host).get_manifest(src)
    signature = push_referrer(registries, src, subject, SIGNATURE_TYPE)
    kept = push_referrer(registries, src, subject, SIGNATURE_TYPE)
    env = {"REPLICATOR_DELETE_POLICY": "propagate"}
    with worker_runtime(source, target, fresh_azurite, **env) as (rt, _):
        run_reconcile(rt, sleep=lambda _s: None)
        assert drain(rt).poisoned == 0
        assert index_lists(registries, target.host, image.digest) == {signature, kept}

        registries.client(source.host).delete_manifest(src.with_tag(None).with_digest(signature))
        found = run_reconcile(rt, sleep=lambda _s: None)
        deletes = [(j.action.value, j.digest) for j in found.jobs]
        assert deletes == [("delete", signature)]
        assert drain(rt).poisoned == 0
        dr = registries.client(target.host)
        assert dr.head_manifest(ImageRef(target.host, REPO, digest=signature)) is None
        assert index_lists(registries, target.host, image.digest) == {kept}
        again = run_reconcile(rt, sleep=lambda _s: None)
        assert (again.enqueued, again.jobs) == (0, ())


def test_a_repair_that_cannot_finish_pushes_no_manifest_and_no_tag(
    pair: tuple[Registry, Registry], registries: Registries
) -> None:
    """DR lost a platform manifest and one of its layers, and the source lost that layer
    too: the repair fails on the blob, before the manifest naming it or the tag."""
    source, target = pair
    src, dst = ImageRef(source.host, REPO, "v1"), ImageRef(target.host, REPO, "v1")
    image = push_test_image(registries, src)
    by_digest = dst.with_tag(None).with_digest(image.digest)
    ImageCopier(registries).copy_image(src.with_tag(None).with_digest(image.digest), by_digest)
    client = registries.client(target.host)
    child = ImageRef(target.host, REPO, digest=image.manifests[0])
    client.delete_manifest(child)
    layer = image.blobs[1]
    delete_blob(registries, target.host, layer)
    delete_blob(registries, source.host, layer)

    with pytest.raises(NotFoundError):
        ImageCopier(registries).copy_image(src, dst, repair=True)
    assert client.head_manifest(child) is None  # never pushed ahead of its blob
    assert client.head_manifest(dst) is None  # nor the tag
    assert client.head_blob(REPO, image.blobs[0]) is not None
