"""The fakes of tests/fakes.py answer as the real parts do: the same scenario, through the
same port calls, on a real distribution registry and on ``FakeRegistry``, on the status
table in Azurite and on ``FakeClaims``. The middle tier (tests/unit/app) is only worth
what this keeps true."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from devstack.localstack import Azurite, Registry
from devstack.testimages import push_test_image
from replicator.adapters.acr.reach import DataPlaneReach, Seen, read_manifest
from replicator.adapters.acr.tags import delete_tag
from replicator.adapters.azure import claims as table_claims
from replicator.adapters.azure.claims import Claim, TableClaims
from replicator.adapters.azure.status import TableStatusStore
from replicator.adapters.oci.listing import RegistryLister
from replicator.adapters.oci.registries import Registries
from replicator.app.ports import PushClaims, RegistryClient
from replicator.domain.config import StorageConnection
from replicator.domain.model import Action, CopyJob, utcnow
from replicator.domain.reference import ImageRef
from tests.fakes import FakeClaims, FakeRegistry

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


@pytest.fixture(params=["table", "fake"])
def claims(request: pytest.FixtureRequest) -> PushClaims:
    if request.param == "fake":
        return FakeClaims()
    azurite: Azurite = request.getfixturevalue("azurite")
    table = TableStatusStore(
        StorageConnection(azurite.connection_string), name=f"claims{uuid.uuid4().hex[:10]}"
    )
    table.ensure()
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
