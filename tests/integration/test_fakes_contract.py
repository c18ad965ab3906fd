"""The fakes of tests/fakes.py answer as the real parts do: the same scenario, through the
same port calls, on a real distribution registry and on ``FakeRegistry``, on the status
table in Azurite and on ``FakeClaims`` and ``FakeCursors``; the ``ReferrerLister`` port
on both referrer shapes (the referrers API of devstack.referrers_api, and plain
distribution's fallback tag) and on ``FakeRegistries``; what the integrity audit reads
(``RegistryClient.get_manifest`` by digest, ``head_blob``) and what the audit
(``replicator.app.image_audit.Auditor``) finds when a layer or a child manifest is gone.
The middle tier (tests/unit/app) is only worth what this keeps true."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from devstack.localstack import Azurite, Registry
from devstack.testimages import SBOM_TYPE, SIGNATURE_TYPE, push_test_image
from replicator.adapters.acr.reach import DataPlaneReach, Seen, read_manifest
from replicator.adapters.acr.tags import delete_tag
from replicator.adapters.azure import claims as table_claims
from replicator.adapters.azure.claims import Claim, TableClaims
from replicator.adapters.azure.cursors import MAX_POSITION_CHARS, Cursor, TableCursors
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.referrer_lister import RegistryReferrers
from replicator.adapters.oci.registries import Registries
from replicator.app.image_audit import Auditor
from replicator.app.ports import (
    CursorStore,
    PushClaims,
    ReferrerLister,
    RegistryClient,
    RegistryClients,
)
from replicator.domain.config import StorageConnection
from replicator.domain.errors import NotFoundError
from replicator.domain.integrity import Image
from replicator.domain.manifests import blob_descriptors, children_of
from replicator.domain.model import Action, CopyJob, utcnow
from replicator.domain.reference import ImageRef
from replicator.domain.referrers import ListedReferrer
from tests.fakes import FakeClaims, FakeCursors, FakeRegistries, FakeRegistry, digest_of

pytestmark = pytest.mark.integration


@dataclass
class Side:
    host: str
    client: RegistryClient
    digest: str


@pytest.fixture(params=["distribution", "fake"])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    """``app:v1`` and ``app:v2`` on one manifest, in a real registry or in the fake."""
    if request.param == "fake":
        fake = FakeRegistry("fake.example")
        digest = fake.put("app", "sha256:" + "ab" * 32, "v1", "v2")
        yield Side(fake.host, fake, digest)
        return
    real: Registry = request.getfixturevalue("registry")
    with Registries(plain_http=lambda _: True) as registries:
        pushed = push_test_image(registries, ImageRef(real.host, "app", "v1"), referrers=False)
        client = registries.client(real.host)
        ref = ImageRef(real.host, "app", "v1")
        client.put_manifest(ref.with_tag("v2"), client.get_manifest(ref))
        yield Side(real.host, client, pushed.digest)


def listed(side: Side) -> set[tuple[str, str, str | None]]:
    listing = RegistryLister(side.client, side.host).listing()
    assert listing.complete, listing.errors
    return {(e.repository, e.tag, e.digest) for e in listing.entries}


def test_manifests_by_tag_and_digest(side: Side) -> None:
    v1 = ImageRef(side.host, "app", "v1")
    found = side.client.head_manifest(v1)
    assert found is not None and found.digest == side.digest
    assert side.client.head_manifest(v1.with_tag("nope")) is None
    assert side.client.head_manifest(ImageRef(side.host, "other", "v1")) is None
    by_digest = side.client.head_manifest(v1.with_tag(None).with_digest(side.digest))
    assert by_digest is not None and by_digest.digest == side.digest


def test_listing(side: Side) -> None:
    assert listed(side) == {("app", "v1", side.digest), ("app", "v2", side.digest)}


def test_the_optional_read_of_an_import_target(side: Side) -> None:
    reach = DataPlaneReach()
    assert read_manifest(side.client, ImageRef(side.host, "app", "v1"), reach) == Seen(side.digest)
    assert read_manifest(side.client, ImageRef(side.host, "app", "nope"), reach) == Seen(None)


def test_a_tag_delete_is_refused_and_the_tag_stays(side: Side) -> None:
    done = delete_tag(side.client, side.host, "app", "v1")
    assert done.refused is not None and "HTTP 400" in done.refused
    assert listed(side) == {("app", "v1", side.digest), ("app", "v2", side.digest)}


def test_a_delete_by_digest_takes_every_tag_on_it(side: Side) -> None:
    side.client.delete_manifest(ImageRef(side.host, "app", digest=side.digest))
    assert side.client.head_manifest(ImageRef(side.host, "app", "v1")) is None
    assert side.client.head_manifest(ImageRef(side.host, "app", "v2")) is None
    assert listed(side) == set()


def _fresh_table(request: pytest.FixtureRequest, prefix: str) -> TableStatusStore:
    """A new table on the session's Azurite."""
    azurite: Azurite = request.getfixturevalue("azurite")
    table = TableStatusStore(
        StorageConnection(azurite.connection_string), name=f"{prefix}{uuid.uuid4().hex[:10]}"
    )
    table.ensure()
    return table


@pytest.fixture(params=["table", "fake"])
def claims(request: pytest.FixtureRequest) -> PushClaims:
    if request.param == "fake":
        return FakeClaims()
    table = _fresh_table(request, "claims")
    return TableClaims(table)


def a_push(**changes: object) -> CopyJob:
    job = CopyJob(
        Action.PUSH,
        "src.example",
        "dr.example",
        "app",
        "sha256:" + "cd" * 32,
        "v1",
        pushed_at=utcnow(),
        job_id=uuid.uuid4().hex,
    )
    return job.evolve(**changes)


def test_claims_owned_busy_released_done(claims: PushClaims) -> None:
    job = a_push()
    assert claims.claim(job) is Claim.OWNED
    assert claims.claim(job) is Claim.BUSY  # a duplicate while it runs
    claims.release(job, done=False)  # a transient failure gives it up
    assert claims.claim(job) is Claim.OWNED
    claims.release(job, done=True)
    assert claims.claim(job) is Claim.DONE
    later = job.evolve(pushed_at=utcnow() + timedelta(seconds=5))  # the tag moved back
    assert claims.claim(later) is Claim.OWNED
    assert claims.claim(later) is Claim.BUSY


def test_claims_of_a_dead_worker_are_taken_over_after_the_lease(
    claims: PushClaims, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_push()
    assert claims.claim(job) is Claim.OWNED
    monkeypatch.setattr(table_claims, "CLAIM_LEASE", timedelta(0))
    assert claims.claim(job) is Claim.OWNED
    claims.release(job, done=True)
    assert claims.claim(job) is Claim.DONE  # a lease never outlives done


def test_a_released_claim_that_was_never_taken_is_harmless(claims: PushClaims) -> None:
    job = a_push()
    claims.release(job, done=False)
    assert claims.claim(job) is Claim.OWNED


@pytest.fixture(params=["table", "fake"])
def cursors(request: pytest.FixtureRequest) -> CursorStore:
    if request.param == "fake":
        return FakeCursors()
    table = _fresh_table(request, "cursors")
    return TableCursors(table)


def test_cursors_start_round_trip_replace_and_list_by_prefix(cursors: CursorStore) -> None:
    assert cursors.get("referrers|dr.example") == Cursor("referrers|dr.example")
    when = datetime(2026, 12, 1, 14, 30, 5, 123456, tzinfo=UTC)
    moved = Cursor("referrers|dr.example", "app@" + "sha256:" + "ab" * 32, 2, when, {"checked": 3})
    cursors.put(moved)
    assert cursors.get(moved.name) == moved
    again = Cursor(moved.name, "", 3, when, {"missing": 1})
    cursors.put(again)  # a pass replaces the row, counts and all
    assert cursors.get(moved.name) == again
    long = Cursor("referrers|a.example", "x" * (MAX_POSITION_CHARS + 50))
    cursors.put(long)
    assert cursors.get(long.name).position == "x" * MAX_POSITION_CHARS
    cursors.put(Cursor("verify|dr.example", "y"))
    listed = [c.name for c in cursors.starting_with("referrers|")]
    assert listed == ["referrers|a.example", "referrers|dr.example"]
    assert [c.name for c in cursors.starting_with("verify|")] == ["verify|dr.example"]


@dataclass
class Signed:
    """A signed two-platform image in a registry of one shape, through the port: the
    index, its platforms, the SBOM on the index and the signature on the first platform."""

    host: str
    lister: ReferrerLister
    index: str
    platforms: tuple[str, ...]
    sbom: str
    signature: str
    delete: Callable[[str], None]
    api: bool  # the registry has the referrers API


@pytest.fixture(params=["api", "fallback", "fake-api", "fake-fallback"])
def signed(request: pytest.FixtureRequest) -> Iterator[Signed]:
    kind = str(request.param)
    if kind.startswith("fake"):
        fake = FakeRegistry("fake.example", referrers_api=kind == "fake-api")
        index = fake.put_image("app", "app-v1", "v1")
        children = fake.children["app"][index]
        sbom = fake.attach("app", index, SBOM_TYPE)
        signature = fake.attach("app", children[0], SIGNATURE_TYPE)

        def forget(digest: str) -> None:
            fake.delete_manifest(ImageRef(fake.host, "app", digest=digest))

        lister: ReferrerLister = FakeRegistries(fake)
        yield Signed(
            fake.host, lister, index, children, sbom, signature, forget, kind == "fake-api"
        )
        return
    real: Registry = request.getfixturevalue("api_registry" if kind == "api" else "registry")
    with Registries(plain_http=lambda _: True) as registries:
        pushed = push_test_image(registries, ImageRef(real.host, "app", "v1"))
        client = registries.client(real.host)

        def delete(digest: str) -> None:
            client.delete_manifest(ImageRef(real.host, "app", digest=digest))

        sbom, signature = pushed.referrer_digests
        lister = RegistryReferrers(registries)
        yield Signed(
            real.host,
            lister,
            pushed.digest,
            pushed.manifests,
            sbom,
            signature,
            delete,
            kind == "api",
        )


def test_subjects_are_the_manifest_and_the_platforms_it_lists(signed: Signed) -> None:
    lister = signed.lister
    assert lister.subjects(signed.host, "app", signed.index) == (signed.index, *signed.platforms)
    assert lister.subjects(signed.host, "app", signed.platforms[1]) == (signed.platforms[1],)
    assert lister.subjects(signed.host, "app", digest_of("never pushed")) is None


def test_referrers_of_each_manifest_with_their_artifact_type(signed: Signed) -> None:
    def listed(subject: str, **kw: bool) -> tuple[ListedReferrer, ...]:
        return signed.lister.referrers(signed.host, "app", subject, **kw)

    assert listed(signed.index) == (ListedReferrer(signed.sbom, SBOM_TYPE),)
    assert listed(signed.platforms[0]) == (ListedReferrer(signed.signature, SIGNATURE_TYPE),)
    assert listed(signed.platforms[0], fallback_first=True) == listed(signed.platforms[0])
    assert listed(signed.platforms[1]) == ()
    assert listed(digest_of("no such subject")) == ()


def test_a_deleted_referrer_leaves_the_api_but_not_a_fallback_tag(signed: Signed) -> None:
    """The referrers API forgets a deleted manifest (spec 1.1, "Listing Referrers"); the
    fallback tag is the pusher's to keep, and the registry leaves it as it was."""
    signed.delete(signed.signature)
    still = signed.lister.referrers(signed.host, "app", signed.platforms[0])
    kept = (ListedReferrer(signed.signature, SIGNATURE_TYPE),)
    assert still == (() if signed.api else kept)
    assert signed.lister.referrers(signed.host, "app", signed.index) == (
        ListedReferrer(signed.sbom, SBOM_TYPE),
    )


def test_unlist_takes_a_referrer_off_its_fallback_tag_and_leaves_the_api_alone(
    signed: Signed,
) -> None:
    done = signed.lister.unlist(signed.host, "app", signed.signature)
    assert done == (None if signed.api else signed.platforms[0])
    after = signed.lister.referrers(signed.host, "app", signed.platforms[0])
    kept = (ListedReferrer(signed.signature, SIGNATURE_TYPE),)
    assert after == (kept if signed.api else ())  # the API lists it until it is deleted
    assert signed.lister.unlist(signed.host, "app", digest_of("never pushed")) is None


@dataclass
class Stored:
    """A two-platform image (no referrers) in a real registry or in the fake, through the
    ``RegistryClient`` port, with the ways to plant a defect under it."""

    host: str
    registries: RegistryClients
    index: str
    platforms: tuple[str, ...]
    remove_blob: Callable[[str], None]  # a layer or config gone, the manifests stay
    remove_manifest: Callable[[str], None]  # a platform manifest gone, the index stays

    @property
    def client(self) -> RegistryClient:
        return self.registries.client(self.host)


@pytest.fixture(params=["distribution", "fake"])
def stored(request: pytest.FixtureRequest) -> Iterator[Stored]:
    if request.param == "fake":
        fake = FakeRegistry("fake.example")
        index = fake.put_image("app", "app-v1", "v1")
        yield Stored(
            fake.host,
            FakeRegistries(fake),
            index,
            fake.children["app"][index],
            lambda digest: fake.remove_blob("app", digest),
            lambda digest: fake.remove_manifest("app", digest),
        )
        return
    real: Registry = request.getfixturevalue("registry")
    with Registries(plain_http=lambda _: True) as registries:
        pushed = push_test_image(registries, ImageRef(real.host, "app", "v1"), referrers=False)
        client = registries.client(real.host)

        def remove_blob(digest: str) -> None:  # distribution-spec end-10: 202 Accepted
            path = f"/v2/app/blobs/{digest}"
            answer = client.request("DELETE", path, operation="DELETE blob", reference=digest)
            assert answer.status_code == 202, answer.status_code

        def remove_manifest(digest: str) -> None:
            client.delete_manifest(ImageRef(real.host, "app", digest=digest))

        yield Stored(
            real.host,
            registries,
            pushed.digest,
            pushed.manifests,
            remove_blob,
            remove_manifest,
        )


def test_manifests_by_digest_name_their_children_and_blobs_and_blobs_answer_head(
    stored: Stored,
) -> None:
    client = stored.client
    index = client.get_manifest(ImageRef(stored.host, "app", digest=stored.index))
    assert (index.digest, children_of(index)) == (stored.index, list(stored.platforms))
    assert client.get_manifest(ImageRef(stored.host, "app", "v1")).digest == stored.index
    platform = client.get_manifest(ImageRef(stored.host, "app", digest=stored.platforms[0]))
    blobs = blob_descriptors(platform)
    assert len(blobs) >= 2  # a config and a layer at least
    assert [client.head_blob("app", digest) for digest, _ in blobs] == [s for _, s in blobs]
    assert client.head_blob("app", digest_of("never pushed")) is None
    assert client.head_blob("other", blobs[0][0]) is None  # blobs are per repository
    with pytest.raises(NotFoundError):
        client.get_manifest(ImageRef(stored.host, "app", digest=digest_of("never pushed")))


def test_the_audit_finds_a_removed_layer_and_a_removed_child(stored: Stored) -> None:
    image = Image("app", stored.index, ("v1",))
    clean = Auditor(stored.registries, stored.host, stored.host).image(image)
    assert (clean.missing, clean.unreadable, clean.manifests) == ([], [], 3)
    first = stored.client.get_manifest(ImageRef(stored.host, "app", digest=stored.platforms[0]))
    layer = blob_descriptors(first)[-1][0]
    stored.remove_blob(layer)
    stored.remove_manifest(stored.platforms[1])
    assert stored.client.head_blob("app", layer) is None
    found = Auditor(stored.registries, stored.host, stored.host).image(image)
    assert sorted((f.kind, f.digest, f.parent) for f in found.missing) == [
        ("blob", layer, stored.platforms[0]),
        ("manifest", stored.platforms[1], stored.index),
    ]
    assert found.unreadable == []
