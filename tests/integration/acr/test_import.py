"""ARM ImportImage through the real SDK against the ARM double, which really copies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from doubles.arm import ArmDouble, FakeAcr
from doubles.identity import FED_APP, FUNCTION_MI, OTHER, ManagedIdentityDouble
from doubles.seed import manifest_digest, seed

from replicator.acr.errors import ImportUnavailableError
from replicator.acr.importer import AcrImporter
from replicator.config import Settings, load_settings
from replicator.errors import NotFoundError, PermanentRegistryError, TransientRegistryError
from replicator.identity import credential_for
from replicator.localstack import LocalStack
from replicator.model import Action, CopyJob

IMPORTER_ROLE = "Container Registry Data Importer and Data Reader"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Pair:
    arm: ArmDouble
    source: FakeAcr
    target: FakeAcr

    def settings(self, strategy: str = "import", **extra: str) -> Settings:
        target = {
            "login_server": self.target.host,
            "resource_id": self.target.resource_id,
            "strategy": strategy,
        }
        env = {
            "REPLICATOR_SOURCE": self.source.host,
            "REPLICATOR_SOURCE_RESOURCE_ID": self.source.resource_id,
            "REPLICATOR_TARGETS": json.dumps([target]),
            "REPLICATOR_ARM_ENDPOINT": self.arm.url,
            "IDENTITY_ENDPOINT": "set",  # auto -> managed identity for both registries
            **extra,
        }
        return load_settings(env)

    def job(self, digest: str, tag: str | None = "1.0") -> CopyJob:
        return CopyJob(Action.PUSH, self.source.host, self.target.host, "team/app", digest, tag)

    def target_digest(self, reference: str) -> str | None:
        url = f"http://{self.target.host}/v2/team/app/manifests/{reference}"
        response = httpx.head(url, headers={"Accept": MANIFEST})
        return (
            response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
        )


@pytest.fixture
def pair(
    arm: ArmDouble, managed_identity: ManagedIdentityDouble, stack: LocalStack
) -> Iterator[Pair]:
    src, dst = stack.start_registry(), stack.start_registry()
    source = arm.add(FakeAcr("contososrc", src.host))
    target = arm.add(FakeAcr("contosodr", dst.host))
    arm.assign(FUNCTION_MI, IMPORTER_ROLE, target)
    arm.assign(FUNCTION_MI, "AcrPull", source)
    seed(src.host, [("team/app", "1.0", 1)])
    yield Pair(arm, source, target)
    src.stop()
    dst.stop()


@pytest.fixture
def importer_for() -> Iterator[Callable[..., AcrImporter]]:
    """Build importers the way the worker does; close them and their credentials after."""
    opened: list[Any] = []

    def build(settings: Settings, **kwargs: Any) -> AcrImporter:
        credential = credential_for(settings, settings.targets[0].login_server)
        assert credential is not None
        source_credential = credential_for(settings, settings.source)
        importer = AcrImporter(
            settings,
            credential,
            source_credential=source_credential,
            polling_interval=0,
            retry_total=0,
            **kwargs,
        )
        opened.extend([importer, credential, source_credential])
        return importer

    yield build
    for item in opened:
        if item is not None:
            item.close()


def test_import_by_resource_id_copies_the_image_and_sends_the_pinned_body(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(1)
    report = importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)
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
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(1)
    importer_for(settings).import_image(pair.job(digest, tag=None), settings.targets[0], digest)
    body = pair.arm.import_bodies[-1]
    assert body == {
        "source": {"resourceId": pair.source.resource_id, "sourceImage": f"team/app@{digest}"},
        "untaggedTargetRepositories": ["team/app"],
        "mode": "Force",
    }
    assert pair.target_digest(digest) == digest
    assert pair.target_digest("1.0") is None


def test_force_moves_an_existing_target_tag(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    seed(pair.target.host, [("team/app", "1.0", 2)])  # the DR tag points elsewhere
    settings = pair.settings()
    digest = manifest_digest(1)
    importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)
    assert pair.target_digest("1.0") == digest


def test_cross_tenant_source_by_uri_with_a_source_tenant_token(
    pair: Pair, importer_for: Callable[..., AcrImporter], entra: object, book: object
) -> None:
    from doubles import TokenBook
    from doubles.identity import EntraDouble

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
    importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)
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


def _no_import_role(pair: Pair) -> None:
    pair.arm.roles.clear()
    pair.arm.assign(FUNCTION_MI, "AcrPush", pair.target)
    pair.arm.assign(FUNCTION_MI, "AcrPull", pair.source)


def _no_source_pull(pair: Pair) -> None:
    pair.arm.roles.pop((FUNCTION_MI.object_id, pair.source.resource_id.lower()))


def _private_source(pair: Pair) -> None:
    pair.source.public_network_access = "Disabled"
    pair.source.private_endpoints = 1
    pair.source.bypass = "None"


FAILURES = [
    ("missing-import-role", _no_import_role, PermanentRegistryError, "AcrPush alone"),
    (
        "throttled",
        lambda p: p.arm.fail_next.append("throttled"),
        TransientRegistryError,
        "throttled",
    ),
    ("source-unauthorised", _no_source_pull, PermanentRegistryError, "AcrPull on the source"),
    ("private-source", _private_source, ImportUnavailableError, "not allowed access"),
    ("internal", lambda p: p.arm.fail_next.append("internal"), TransientRegistryError, "Internal"),
]


@pytest.mark.parametrize(
    ("arrange", "kind", "text"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_each_arm_failure_becomes_its_error_class(
    pair: Pair,
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
        importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)
    assert type(caught.value) is kind
    assert pair.target_digest("1.0") is None


def test_throttling_carries_retry_after(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    pair.arm.fail_next.append("throttled")
    settings = pair.settings()
    digest = manifest_digest(1)
    with pytest.raises(TransientRegistryError) as caught:
        importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429


def test_a_missing_source_image_is_not_found(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings()
    digest = manifest_digest(9)  # never pushed
    with pytest.raises(NotFoundError, match="Unable to find manifest"):
        importer_for(settings).import_image(pair.job(digest), settings.targets[0], digest)


def test_an_import_past_its_deadline_is_transient(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    pair.arm.polls = 40
    settings = pair.settings()
    digest = manifest_digest(1)
    importer = importer_for(settings, deadline=0.05)
    importer.polling_interval = 0.05
    with pytest.raises(TransientRegistryError, match="did not finish"):
        importer.import_image(pair.job(digest), settings.targets[0], digest)


def test_a_target_without_resource_id_cannot_import(
    pair: Pair, importer_for: Callable[..., AcrImporter]
) -> None:
    settings = pair.settings(strategy="auto")
    target = settings.targets[0].__class__(pair.target.host)
    digest = manifest_digest(1)
    with pytest.raises(ImportUnavailableError, match="resource_id"):
        importer_for(settings).import_image(pair.job(digest), target, digest)
