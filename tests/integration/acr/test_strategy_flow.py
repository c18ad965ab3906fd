"""Planner + importer + OCI copier together: import with referrers, fallback to copy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devstack.testimages import PushedImage, push_test_image
from replicator.adapters.acr.errors import ImportUnavailableError
from replicator.adapters.acr.import_plan import IMPORT_MANIFEST_BUDGET
from replicator.adapters.acr.importer import AcrImporter
from replicator.adapters.azure import telemetry
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.referrers import Referrers, list_referrers, update_fallback
from replicator.adapters.oci.registries import Registries
from replicator.app.delivery import replicate_with_strategy
from replicator.domain.config import Settings
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.manifests import OCI_INDEX, Manifest
from replicator.domain.model import Action, CopyJob
from replicator.domain.reference import ImageRef
from tests.doubles.arm import ArmPair
from tests.doubles.identity import FUNCTION_MI
from tests.metrics import counted


@pytest.fixture
def captured() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(provider)
    yield reader
    telemetry.use_providers()
    provider.shutdown()


def fallbacks(reader: InMemoryMetricReader) -> list[tuple[object, ...]]:
    """(reason, part, count) of the ``replication_fallbacks`` counter."""
    return list(counted(reader, "replication_fallbacks", "reason", "part"))


IMPORTER_ROLE = "Container Registry Data Importer and Data Reader"


@pytest.fixture
def image(pair: ArmPair, registries: Registries) -> PushedImage:
    """A two-platform index with an SBOM and a signature, in the source; the identity may
    read the source (the importer role there: import by resource id needs it)."""
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.source)
    ref = ImageRef(pair.source.host, "team/app", "2.0")
    return push_test_image(registries, ref, referrers=True)


def deliver(
    pair: ArmPair,
    settings: Settings,
    image: PushedImage,
    registries: Registries,
    importer: AcrImporter,
) -> tuple[str, dict[str, str], int]:
    job = CopyJob(Action.PUSH, pair.source.host, pair.target.host, "team/app", image.digest, "2.0")
    report, path = replicate_with_strategy(
        job,
        settings.targets[0],
        image.digest,
        importer=importer,
        copier=ImageCopier(registries),
        settings=settings,
    )
    assert report.digest == image.digest
    target = registries.client(pair.target.host)
    found = list_referrers(registries, target, "team/app", image.digest)
    child = list_referrers(registries, target, "team/app", image.manifests[0])
    return path, report.extra, len(found.descriptors) + len(child.descriptors)


class DeliverAs(Protocol):
    def __call__(
        self, strategy: str, image: PushedImage, *, copier: bool = True
    ) -> tuple[str, dict[str, str], int]: ...


@pytest.fixture(name="deliver_as")
def deliver_as_fixture(
    pair: ArmPair, registries: Registries, importer_for: Callable[..., AcrImporter]
) -> DeliverAs:
    """``deliver`` under ``strategy`` with the worker's importer for it: one that copies
    what it may not import (``copier``), else one that only reads the source."""

    def run(
        strategy: str, image: PushedImage, *, copier: bool = True
    ) -> tuple[str, dict[str, str], int]:
        settings = pair.settings(strategy)
        if copier:
            importer = importer_for(settings, copier=ImageCopier(registries))
        else:
            importer = importer_for(settings, registries=registries)
        return deliver(pair, settings, image, registries, importer)

    return run


def test_import_brings_each_referrer_by_its_own_import_by_digest(
    pair: ArmPair, image: PushedImage, deliver_as: DeliverAs
) -> None:
    """No data-plane copier at all: the image and its referrers arrive by ImportImage."""
    path, extra, referrers = deliver_as("import", image, copier=False)
    assert path == "import"
    assert extra == {"strategy": "import", "referrers": "import"}
    assert referrers == image.referrers == 2
    assert pair.target_digest("2.0") == image.digest
    image_body, *referrer_bodies = pair.arm.import_bodies
    assert image_body["targetTags"] == ["team/app:2.0"]
    assert len(referrer_bodies) == 2
    for body in referrer_bodies:
        assert body["untaggedTargetRepositories"] == ["team/app"]
        assert "targetTags" not in body
        assert body["source"]["sourceImage"].startswith("team/app@sha256:")
        assert body["mode"] == "Force"


def test_auto_falls_back_to_copy_when_the_source_is_behind_a_private_endpoint(
    pair: ArmPair, image: PushedImage, captured: InMemoryMetricReader, deliver_as: DeliverAs
) -> None:
    pair.source.public_network_access = "Disabled"
    pair.source.private_endpoints = 1
    pair.source.bypass = "None"
    path, extra, referrers = deliver_as("auto", image)
    assert path == "copy"
    assert extra["fallback_from"] == "import"
    assert "not allowed access" in extra["fallback_reason"]
    assert referrers == 2
    assert pair.target_digest("2.0") == image.digest
    assert len(pair.arm.import_bodies) == 1  # import was tried once
    assert fallbacks(captured) == [("network", "image", 1)]


def test_strategy_import_does_not_fall_back(
    pair: ArmPair, image: PushedImage, deliver_as: DeliverAs
) -> None:
    pair.source.public_network_access = "Disabled"
    pair.source.bypass = "None"
    with pytest.raises(ImportUnavailableError):
        deliver_as("import", image)
    assert pair.target_digest("2.0") is None


def test_auto_without_import_rights_copies_and_says_why(
    pair: ArmPair, image: PushedImage, deliver_as: DeliverAs
) -> None:
    pair.arm.roles.pop((FUNCTION_MI.object_id, pair.target.resource_id.lower()))
    path, extra, referrers = deliver_as("auto", image)
    assert path == "copy"
    assert extra["fallback_reason_code"] == "target-authorization"
    assert "Data Importer and Data Reader" in extra["fallback_reason"]
    assert referrers == 2
    assert pair.target_digest("2.0") == image.digest


def test_the_worker_wiring_imports_with_one_importer_per_target(
    pair: ArmPair, image: PushedImage, registries: Registries
) -> None:
    """What the worker builds: ``deliverer(settings, importer=AcrImporters(...), copier=...)``."""
    from replicator.adapters.acr.importer import AcrImporters
    from replicator.app.delivery import deliverer

    settings = pair.settings("auto")
    copier = ImageCopier(registries)
    importers = AcrImporters(settings, copier=copier, polling_interval=0)
    deliver = deliverer(settings, importer=importers, copier=copier)
    job = CopyJob(Action.PUSH, pair.source.host, pair.target.host, "team/app", image.digest, "2.0")
    try:
        report, path = deliver(job, settings.targets[0], image.digest)
    finally:
        importers.close()
    assert path == "import"
    assert report.referrers_copied == 2
    assert pair.target_digest("2.0") == image.digest


def test_strategy_copy_never_calls_arm(
    pair: ArmPair, image: PushedImage, deliver_as: DeliverAs
) -> None:
    path, extra, referrers = deliver_as("copy", image)
    assert path == "copy"
    assert "fallback_from" not in extra
    assert referrers == 2
    assert pair.arm.import_bodies == []
    assert not [t for _, t in pair.arm.requests if "importImage" in t]


def wide_image(
    registries: Registries, host: str, platforms: int, tag: str | None = "2.0"
) -> PushedImage:
    """An index of ``platforms`` tiny images (``platforms + 1`` manifests with the index)."""
    return push_test_image(
        registries,
        ImageRef(host, "team/app", tag),
        platforms=tuple(f"linux/arch{i}" for i in range(platforms)),
        layers=1,
        layer_size=64,
        referrers=False,
    )


def test_an_index_over_the_import_limit_is_copied_under_auto_without_asking_arm(
    pair: ArmPair, registries: Registries, deliver_as: DeliverAs
) -> None:
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.source)
    wide = wide_image(registries, pair.source.host, platforms=IMPORT_MANIFEST_BUDGET)  # 50
    path, extra, _ = deliver_as("auto", wide, copier=False)
    assert path == "copy"
    assert extra["fallback_reason_code"] == "too-many-manifests"
    assert "has 50 manifests" in extra["fallback_reason"]
    assert pair.target_digest("2.0") == wide.digest
    assert pair.arm.import_bodies == []


def test_an_index_at_the_budget_imports(
    pair: ArmPair, registries: Registries, deliver_as: DeliverAs
) -> None:
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.source)
    wide = wide_image(registries, pair.source.host, platforms=IMPORT_MANIFEST_BUDGET - 1)  # 49
    path, _, _ = deliver_as("auto", wide, copier=False)
    assert path == "import"
    assert len(pair.arm.import_bodies) == 1


def test_an_index_over_the_import_limit_fails_at_once_under_import(
    pair: ArmPair, registries: Registries, deliver_as: DeliverAs
) -> None:
    """A permanent failure with its reason (no retries, no poison), and no ARM call."""
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.source)
    wide = wide_image(registries, pair.source.host, platforms=IMPORT_MANIFEST_BUDGET)
    with pytest.raises(ImportUnavailableError, match="has 50 manifests") as caught:
        deliver_as("import", wide, copier=False)
    assert isinstance(caught.value, PermanentRegistryError)
    assert pair.arm.import_bodies == []
    assert pair.target_digest("2.0") is None


def push_referrer_index(registries: Registries, host: str, image: PushedImage) -> str:
    """A referrer of ``image`` that is itself an index of 49 manifests (50 with itself)."""
    client = registries.client(host)
    parts = wide_image(registries, host, IMPORT_MANIFEST_BUDGET, tag=None)
    listed = client.get_manifest(ImageRef(host, "team/app", digest=parts.digest)).json
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": listed["manifests"],
        "subject": {"mediaType": image.media_type, "digest": image.digest, "size": image.size},
    }
    manifest = Manifest.from_bytes(json.dumps(body).encode(), OCI_INDEX)
    client.put_manifest(ImageRef(host, "team/app", digest=manifest.digest), manifest)
    update_fallback(client, "team/app", image.digest, Referrers((manifest.descriptor(),)))
    return manifest.digest


def test_auto_copies_only_the_referrers_whose_import_is_refused(
    pair: ArmPair,
    image: PushedImage,
    registries: Registries,
    captured: InMemoryMetricReader,
    deliver_as: DeliverAs,
) -> None:
    big = push_referrer_index(registries, pair.source.host, image)
    path, extra, referrers = deliver_as("auto", image)
    assert path == "import"  # the image itself went by import
    assert len(pair.arm.import_bodies) == 1  # and no referrer import was tried
    assert "has 50 manifests" in extra["referrers_fallback_reason"]
    assert referrers == image.referrers + 1
    target = registries.client(pair.target.host)
    assert target.head_manifest(ImageRef(pair.target.host, "team/app", digest=big)) is not None
    assert fallbacks(captured) == [("too-many-manifests", "referrers", 1)]


def test_import_fails_when_a_referrer_cannot_be_imported(
    pair: ArmPair, image: PushedImage, registries: Registries, deliver_as: DeliverAs
) -> None:
    push_referrer_index(registries, pair.source.host, image)
    with pytest.raises(ImportUnavailableError, match="has 50 manifests"):
        deliver_as("import", image)
