"""An ``import`` target whose data plane the worker cannot reach (issue 13, item 2).

Strategy ``import`` is what a DR registry behind a private endpoint gets: public network
access off, the login server unresolvable, refused or dropped from the worker's network,
while ImportImage (ARM, then the registry itself) still moves the data. Here the FakeAcr's
login server, the only address the worker is given, leads nowhere, and the ARM double's
import writes to the real registry behind it (``FakeAcr.private_host``). The worker must
replicate the image and its referrers through the whole worker path (event -> queue ->
``service.replicate`` -> planner -> importer) and say in the row what it could not read.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import pytest

from devstack.localruntime import LocalRuntime, serving
from devstack.localstack import Azurite
from devstack.localworker import QUICK_REGISTRY_RETRY, deliver_push, drain
from devstack.testimages import PushedImage, push_test_image
from replicator.adapters.azure.queue import NO_WAIT_RETRY
from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries
from replicator.app.delivery import Planner
from replicator.app.ports import Importer
from replicator.domain.config import load_settings
from replicator.domain.model import CopyJob, CopyReport, Target
from replicator.domain.reference import ImageRef
from tests.doubles.arm import ArmPair


class Dropping:
    """A loopback port that accepts connections and closes them unanswered (a middlebox
    dropping the worker's traffic); ``accepted`` counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


def closed_port() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def dropping() -> Iterator[Dropping]:
    running = Dropping()
    yield running
    running.close()


def go_private(pair: ArmPair, login_server: str) -> str:
    """Public access off, one private endpoint: the worker is given ``login_server``, the
    registry keeps writing to its real data plane. Returns that real host."""
    real = pair.target.host
    pair.target.private_host = real
    pair.target.host = login_server
    pair.target.public_network_access = "Disabled"
    pair.target.private_endpoints = 1
    return real


@contextmanager
def worker(pair: ArmPair, azurite: Azurite) -> Iterator[LocalRuntime]:
    env = {
        **pair.env("import"),
        "AzureWebJobsStorage": azurite.connection_string,
        "IDENTITY_ENDPOINT": "set",  # ARM through the managed identity double
    }
    with serving(
        load_settings(env, require_storage=True),
        storage_retry=NO_WAIT_RETRY,
        registry_retry=QUICK_REGISTRY_RETRY,
    ) as runtime:
        yield runtime


def announce(pair: ArmPair, ref: ImageRef, image: PushedImage) -> None:
    """ACR's ImagePushed event from the source's system topic (its resource id)."""
    topic = pair.source.resource_id
    deliver_push(ref, image.digest, image.size, media_type=image.media_type, topic=topic)


def push(runtime: LocalRuntime, pair: ArmPair, tag: str) -> tuple[ImageRef, PushedImage]:
    """A two-platform index with an SBOM and a signature, pushed and announced."""
    ref = ImageRef(pair.source.host, "team/app", tag)
    image = push_test_image(runtime.registries, ref, referrers=True)
    announce(pair, ref, image)
    return ref, image


def referrers(registries: Registries, host: str, subject: str) -> set[str]:
    client = registries.client(host)
    return set(list_referrers(registries, client, "team/app", subject).digests)


def assert_in_dr(pair: ArmPair, real: str, tag: str, image: PushedImage) -> None:
    """Read on the registry's real data plane (the test can reach it; the worker cannot)."""
    with Registries() as registries:
        dr = registries.client(real)
        tagged = dr.head_manifest(ImageRef(real, "team/app", tag))
        assert tagged is not None and tagged.digest == image.digest
        for digest in (*image.manifests, *image.referrer_digests):
            found = dr.head_manifest(ImageRef(real, "team/app", digest=digest))
            assert found is not None and found.digest == digest
        for subject in (image.digest, *image.manifests):
            assert referrers(registries, real, subject) == referrers(
                registries, pair.source.host, subject
            )
        listed = referrers(registries, real, image.digest) | referrers(
            registries, real, image.manifests[0]
        )
        assert listed == set(image.referrer_digests) and len(listed) == image.referrers == 2


def row_of(runtime: LocalRuntime, tag: str) -> dict[str, object]:
    (row,) = runtime.status.images("team/app", tag)
    return row


@pytest.mark.parametrize("kind", ["refused", "unresolvable", "dropped"])
def test_an_import_target_the_worker_cannot_reach_gets_the_image_and_its_referrers(
    pair: ArmPair, fresh_azurite: Azurite, dropping: Dropping, kind: str
) -> None:
    login_server = {
        "refused": closed_port(),
        "unresolvable": "contosodr.privatelink.invalid",  # RFC 6761: never resolves
        "dropped": dropping.host,
    }[kind]
    real = go_private(pair, login_server)
    with worker(pair, fresh_azurite) as runtime:
        _, image = push(runtime, pair, "2.0")
        stats = drain(runtime)
        assert (stats.succeeded, stats.poisoned) == (1, 0)

        row = row_of(runtime, "2.0")
        assert (row["outcome"], row["strategy"], row["digest"]) == (
            "imported",
            "import",
            image.digest,
        )
        note = str(row["lastError"])
        assert f"{login_server} not read before the import" in note
        assert f"not confirmed over {login_server}'s data plane" in note
        assert "ARM reported the import succeeded" in note
        assert_in_dr(pair, real, "2.0", image)
        bodies = pair.arm.import_bodies
        assert len(bodies) == 1 + image.referrers
        assert bodies[0]["targetTags"] == ["team/app:2.0"] and bodies[0]["mode"] == "Force"
        assert all(b["untaggedTargetRepositories"] == ["team/app"] for b in bodies[1:])


def test_an_unreachable_data_plane_is_tried_once_then_remembered(
    pair: ArmPair, fresh_azurite: Azurite, dropping: Dropping
) -> None:
    """One connection for the first job (its check before the import, not retried; the
    check after it knows already), none for the next: no job pays the retries or a connect
    timeout per read while the target stays out of reach."""
    real = go_private(pair, dropping.host)
    with worker(pair, fresh_azurite) as runtime:
        push(runtime, pair, "2.0")
        assert drain(runtime).succeeded == 1
        assert dropping.accepted == 1
        _, image = push(runtime, pair, "2.1")
        assert drain(runtime).succeeded == 1
        assert dropping.accepted == 1
        assert row_of(runtime, "2.1")["outcome"] == "imported"
        assert "remembered until" in str(row_of(runtime, "2.1")["lastError"])
        assert_in_dr(pair, real, "2.1", image)


def test_a_reachable_import_target_is_still_read_before_and_after(
    pair: ArmPair, fresh_azurite: Azurite
) -> None:
    """Where the data plane answers nothing changes: an image already there is not
    imported again, and an import is confirmed (no note on the row)."""
    with worker(pair, fresh_azurite) as runtime:
        _, image = push(runtime, pair, "2.0")
        assert drain(runtime).succeeded == 1
        row = row_of(runtime, "2.0")
        assert row["outcome"] == "imported" and not row["lastError"]
        imports = len(pair.arm.import_bodies)
        announce(pair, ImageRef(pair.source.host, "team/app", "2.0"), image)
        # a new push time: the claim is new, the target check finds it present
        assert drain(runtime).succeeded == 1
        assert len(pair.arm.import_bodies) == imports
        assert row_of(runtime, "2.0")["outcome"] == "already_present"


@dataclass
class TagMovesDuringImport:
    """The race an import by digest with ``Force`` has: while this job imports D1, the
    tag moves to D2 in the source and another job's import of D2 lands first; then this
    job's import of D1 lands and would set the DR tag back to D1."""

    inner: Importer
    registries: Registries
    ref: ImageRef
    newer: list[PushedImage] = field(default_factory=list)

    def import_image(self, job: CopyJob, target: Target, digest: str) -> CopyReport:
        if not self.newer:
            self.newer.append(push_test_image(self.registries, self.ref, referrers=True))
            self.inner.import_image(job, target, self.newer[0].digest)  # the other job
        return self.inner.import_image(job, target, digest)


@pytest.mark.parametrize("kind", ["reachable", "dropped"])
def test_an_import_that_lands_after_a_newer_one_does_not_set_the_tag_back(
    pair: ArmPair, fresh_azurite: Azurite, dropping: Dropping, kind: str
) -> None:
    """The job reads the source tag again after its import (the source, never the
    target): it moved, so the job imports what it names now. The DR tag ends on D2."""
    real = go_private(pair, dropping.host) if kind == "dropped" else pair.target.host
    with worker(pair, fresh_azurite) as runtime:
        planner = runtime.deliver
        assert isinstance(planner, Planner) and planner.importer is not None
        ref = ImageRef(pair.source.host, "team/app", "2.0")
        racing = TagMovesDuringImport(planner.importer, runtime.registries, ref)
        runtime.deliver = replace(planner, importer=racing)
        _, older = push(runtime, pair, "2.0")
        stats = drain(runtime)
        assert (stats.succeeded, stats.poisoned) == (1, 0)
        (newer,) = racing.newer
        assert newer.digest != older.digest
        row = row_of(runtime, "2.0")
        assert (row["outcome"], row["digest"]) == ("imported", newer.digest)
        assert_in_dr(pair, real, "2.0", newer)
        tagged = [b["source"]["sourceImage"] for b in pair.arm.import_bodies if b.get("targetTags")]
        assert tagged == [f"team/app@{d}" for d in (newer.digest, older.digest, newer.digest)]
