"""ARM ImportImage through the real SDK against the ARM double, which really copies."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from devstack.testimages import manifest_digest, seed
from replicator.adapters.acr.errors import ImportUnavailableError
from replicator.adapters.acr.importer import AcrImporter
from replicator.adapters.oci.registries import Registries
from replicator.domain.errors import NotFoundError, TransientRegistryError
from replicator.domain.model import Action, CopyJob
from tests.doubles.arm import ArmPair
from tests.doubles.identity import FED_APP, FUNCTION_MI, OTHER

IMPORTER_ROLE = "Container Registry Data Importer and Data Reader"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(autouse=True)
def source_readable(pair: ArmPair) -> None:
    """Same tenant, source by resource id: ARM also wants *read* on the source (the
    importer role there, as infra/ grants it for import targets); AcrPull is not enough."""
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.source)


def job_for(pair: ArmPair, digest: str, tag: str | None = "1.0") -> CopyJob:
    return CopyJob(Action.PUSH, pair.source.host, pair.target.host, "team/app", digest, tag)


def test_import_by_resource_id_copies_the_image_and_sends_the_pinned_body(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(1)
    report = importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)
    assert report.digest == digest
    assert report.extra["strategy"] == "import"
    assert pair.target_digest("1.0") == digest
    assert pair.arm.import_bodies == [
        {
            "source": {"resourceId": pair.source.resource_id, "sourceImage": f"team/app@{digest}"},
            "targetTags": ["team/app:1.0"],
            "mode": "Force",
        }
    ]
    posts = [t for m, t in pair.arm.requests if m == "POST"]
    assert posts == [
        f"/subscriptions/{pair.target.subscription}/resourceGroups/rg-dr/providers/"
        "Microsoft.ContainerRegistry/registries/contosodr/importImage?api-version=2025-11-01"
    ]
    polls = [t for m, t in pair.arm.requests if m == "GET" and t.startswith("/operations/")]
    assert polls, "the SDK polled the operation"


def test_digest_only_job_imports_into_an_untagged_repository(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(1)
    importer_for(settings).import_image(
        job_for(pair, digest, tag=None), settings.targets[0], digest
    )
    body = pair.arm.import_bodies[-1]
    assert body == {
        "source": {"resourceId": pair.source.resource_id, "sourceImage": f"team/app@{digest}"},
        "untaggedTargetRepositories": ["team/app"],
        "mode": "Force",
    }
    assert pair.target_digest(digest) == digest
    assert pair.target_digest("1.0") is None


def test_force_moves_an_existing_target_tag(
    pair: ArmPair, importer_for: Callable[..., AcrImporter], registries: Registries
) -> None:
    seed(registries, pair.target.host, [("team/app", "1.0", 2)])  # the DR tag points elsewhere
    settings = pair.settings()
    digest = manifest_digest(1)
    importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)
    assert pair.target_digest("1.0") == digest


def test_cross_tenant_source_by_uri_with_a_source_tenant_token(
    pair: ArmPair, importer_for: Callable[..., AcrImporter], entra: object, book: object
) -> None:
    from tests.doubles import TokenBook
    from tests.doubles.identity import EntraDouble

    assert isinstance(entra, EntraDouble)
    assert isinstance(book, TokenBook)
    pair.source.tenant = OTHER
    pair.arm.roles.clear()
    pair.arm.assign(FUNCTION_MI, IMPORTER_ROLE, pair.target)
    pair.arm.assign(FED_APP, "AcrPull", pair.source)
    identities = {
        pair.source.host: {"mode": "federated", "tenant_id": OTHER, "client_id": FED_APP.client_id}
    }
    settings = pair.settings(
        REPLICATOR_IDENTITIES=json.dumps(identities), AZURE_AUTHORITY_HOST=entra.authority
    )
    digest = manifest_digest(1)
    importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)
    body = pair.arm.import_bodies[-1]
    password = body["source"]["credentials"]["password"]
    assert book.lookup(password) == (FED_APP, pair.arm.url)
    assert body == {
        "source": {
            "registryUri": pair.source.host,
            "sourceImage": f"team/app@{digest}",
            "credentials": {"password": password},
        },
        "targetTags": ["team/app:1.0"],
        "mode": "Force",
    }
    assert pair.target_digest("1.0") == digest


def _no_import_role(pair: ArmPair) -> None:
    pair.arm.roles.clear()
    pair.arm.assign(FUNCTION_MI, "AcrPush", pair.target)
    pair.arm.assign(FUNCTION_MI, "AcrPull", pair.source)


def _no_source_read(pair: ArmPair) -> None:
    """AcrPull alone on the source: ARM answers 403 LinkedAuthorizationFailed."""
    pair.arm.roles.pop((FUNCTION_MI.object_id, pair.source.resource_id.lower()))
    pair.arm.assign(FUNCTION_MI, "AcrPull", pair.source)


def _private_source(pair: ArmPair) -> None:
    pair.source.public_network_access = "Disabled"
    pair.source.private_endpoints = 1
    pair.source.bypass = "None"


FAILURES = [
    ("missing-import-role", _no_import_role, ImportUnavailableError, "AcrPush alone"),
    (
        "throttled",
        lambda p: p.arm.fail_next.append("throttled"),
        TransientRegistryError,
        "throttled",
    ),
    ("source-not-readable", _no_source_read, ImportUnavailableError, "read the source registry"),
    ("private-source", _private_source, ImportUnavailableError, "not allowed access"),
    ("internal", lambda p: p.arm.fail_next.append("internal"), TransientRegistryError, "Internal"),
]


@pytest.mark.parametrize(
    ("arrange", "kind", "text"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_each_arm_failure_becomes_its_error_class(
    pair: ArmPair,
    importer_for: Callable[..., AcrImporter],
    arrange: object,
    kind: type[Exception],
    text: str,
) -> None:
    assert callable(arrange)
    arrange(pair)
    settings = pair.settings()
    digest = manifest_digest(1)
    with pytest.raises(kind, match=text) as caught:
        importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)
    assert type(caught.value) is kind
    assert pair.target_digest("1.0") is None


def test_throttling_carries_retry_after(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    pair.arm.fail_next.append("throttled")
    settings = pair.settings()
    digest = manifest_digest(1)
    with pytest.raises(TransientRegistryError) as caught:
        importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429


def test_a_missing_source_image_is_not_found(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(9)  # never pushed
    with pytest.raises(NotFoundError, match="Unable to find manifest"):
        importer_for(settings).import_image(job_for(pair, digest), settings.targets[0], digest)


def test_an_import_past_its_deadline_is_transient(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    pair.arm.polls = 40
    settings = pair.settings()
    digest = manifest_digest(1)
    importer = importer_for(settings, deadline=0.05)
    importer.polling_interval = 0.05
    with pytest.raises(TransientRegistryError, match="did not finish"):
        importer.import_image(job_for(pair, digest), settings.targets[0], digest)


def test_a_target_without_resource_id_cannot_import(
    pair: ArmPair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings(strategy="auto")
    target = settings.targets[0].__class__(pair.target.host)
    digest = manifest_digest(1)
    with pytest.raises(ImportUnavailableError, match="resource_id"):
        importer_for(settings).import_image(job_for(pair, digest), target, digest)
