"""The deployment, end to end (issue 13 "Done when"): the roles exactly as infra/ grants
them for its default configuration, loaded into the strict ARM double, and a push of a
signed multi-platform index going through the worker's own path (Event Grid handler ->
Azurite queue -> ``triggers.replicate`` -> ``service.replicate`` -> the runtime's planner).

- Under ``auto`` with infra's grants the image lands in DR by import, and its referrers
  too, each by its own ImportImage by digest: digest for digest, listed in DR.
- With only AcrPull on the source (what infra granted before issue 13, and what a source
  owner may still grant), ARM answers LinkedAuthorizationFailed: the job copies instead,
  the status row says why, status shows the verdict, and the next job asks ARM no more.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from devstack.localruntime import LocalRuntime, serving
from devstack.localstack import Azurite, LocalStack
from devstack.localworker import deliver_push, drain
from devstack.testimages import PushedImage, push_test_image
from replicator.adapters.acr import roles
from replicator.adapters.oci.referrers import list_referrers
from replicator.adapters.oci.registries import Registries, RegistryAuth
from replicator.app.api import handle_status
from replicator.domain.config import load_settings
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.manifests import sha256_digest
from replicator.domain.reference import ImageRef
from tests.doubles import TokenBook
from tests.doubles.arm import ArmDouble, ArmPair, FakeAcr
from tests.doubles.identity import FUNCTION_MI, USER_MI, ManagedIdentityDouble
from tests.doubles.token_server import ACR_AUDIENCE, AcrExchange, TokenService, serve

ROOT = Path(__file__).resolve().parents[3]
MAIN_BICEP = ROOT / "infra" / "main.bicep"
PARAMETERS = ROOT / "infra" / "main.parameters.json"


def bicep_default(name: str) -> str:
    """The default of ``param <name> string = '<default>'`` in infra/main.bicep."""
    found = re.search(rf"^param {name} string = '([^']*)'", MAIN_BICEP.read_text(), re.M)
    assert found, f"infra/main.bicep has no string parameter {name} with a default"
    return found.group(1)


def azd_default(name: str) -> str | None:
    """The default azd substitutes for ``name`` in main.parameters.json (``${VAR=default}``),
    or None when the parameter is not there."""
    entry = json.loads(PARAMETERS.read_text())["parameters"].get(name)
    if entry is None:
        return None
    found = re.fullmatch(r"\$\{[A-Z_]+=([^}]*)\}", str(entry["value"]))
    assert found, f"main.parameters.json: {name} has no default"
    return found.group(1)


@dataclass(frozen=True)
class Deployed:
    """infra/'s default configuration, as the deployment would get it."""

    strategy: str
    delete_policy: str
    source_abac: bool
    target_abac: bool

    @classmethod
    def read(cls) -> Deployed:
        values = {}
        for name in (
            "targetStrategy",
            "deletePolicy",
            "sourceRoleAssignmentMode",
            "targetRoleAssignmentMode",
        ):
            value = bicep_default(name)
            azd = azd_default(name)
            assert azd in (None, value), f"{name}: azd's default {azd!r}, Bicep's {value!r}"
            values[name] = value
        return cls(
            values["targetStrategy"],
            values["deletePolicy"],
            values["sourceRoleAssignmentMode"] == "abac",
            values["targetRoleAssignmentMode"] == "abac",
        )

    def source_roles(self) -> tuple[roles.Role, ...]:
        return roles.grants(
            "source",
            strategy=self.strategy,
            delete_policy=self.delete_policy,
            abac=self.source_abac,
        )

    def target_roles(self) -> tuple[roles.Role, ...]:
        return roles.grants(
            "target",
            strategy=self.strategy,
            delete_policy=self.delete_policy,
            abac=self.target_abac,
        )


DEPLOYED = Deployed.read()


@contextmanager
def acr_data_plane(
    stack: LocalStack, workdir: Path, book: TokenBook, arm: ArmDouble, registry: FakeAcr
) -> Iterator[FakeAcr]:
    """A distribution registry behind ACR's token endpoints: the worker's tokens carry only
    what its roles on ``registry`` allow (``AcrExchange``, the same assignments ARM reads);
    the import's own access (ARM's backend) is unlimited, as ACR's is."""
    for part in ("acr", "backend"):
        (workdir / part).mkdir(parents=True)
    exchange = AcrExchange(book, arm.assignments, registry.resource_id, abac=registry.abac)
    service = TokenService(workdir / "acr", acr=exchange)
    backend = TokenService(workdir / "backend")  # grants every scope it is asked for
    bundle = workdir / "roots.pem"
    bundle.write_bytes(service.bundle.read_bytes() + backend.bundle.read_bytes())
    with serve(service):
        running = stack.start_registry(config=service.registry_config(roots=bundle))
        registry.host = running.host
        registry.backend = lambda scope: backend.token([scope] if scope else [])
        try:
            yield arm.add(registry)
        finally:
            running.stop()


@pytest.fixture
def deploy(
    arm: ArmDouble,
    managed_identity: ManagedIdentityDouble,
    stack: LocalStack,
    book: TokenBook,
    tmp_path: Path,
) -> Iterator[Callable[[Deployed], ArmPair]]:
    """Two ACRs known to ARM, each with an ACR-like data plane; the function's identity
    holds what infra/ grants for ``config``, nothing more."""
    with ExitStack() as running:

        def build(config: Deployed) -> ArmPair:
            mode = {True: roles.ABAC_MODE, False: "LegacyRegistryPermissions"}
            made = [
                running.enter_context(
                    acr_data_plane(
                        stack,
                        tmp_path / name,
                        book,
                        arm,
                        FakeAcr(name, "", role_assignment_mode=mode[abac]),
                    )
                )
                for name, abac in (
                    ("contososrc", config.source_abac),
                    ("contosodr", config.target_abac),
                )
            ]
            source, target = made
            arm.grant(FUNCTION_MI, config.source_roles(), source)
            arm.grant(FUNCTION_MI, config.target_roles(), target)
            return ArmPair(arm, source, target)

        yield build


@contextmanager
def worker_for(pair: ArmPair, config: Deployed, azurite: Azurite) -> Iterator[LocalRuntime]:
    """The runtime the function app builds from the app settings infra/ writes; its data
    plane identity on both registries is the managed identity."""
    env = {
        **pair.env(config.strategy),
        "REPLICATOR_DELETE_POLICY": config.delete_policy,
        "REPLICATOR_IDENTITIES": json.dumps(
            {pair.source.host: "managed", pair.target.host: "managed"}
        ),
        "AzureWebJobsStorage": azurite.connection_string,
        "IDENTITY_ENDPOINT": "set",  # the managed identity double's endpoint is in os.environ
    }
    with serving(load_settings(env, require_storage=True)) as runtime:
        yield runtime


@pytest.fixture
def deployment(deploy: Callable[[Deployed], ArmPair]) -> ArmPair:
    return deploy(DEPLOYED)


@pytest.fixture
def worker(deployment: ArmPair, fresh_azurite: Azurite) -> Iterator[LocalRuntime]:
    with worker_for(deployment, DEPLOYED, fresh_azurite) as runtime:
        yield runtime


@dataclass(frozen=True)
class Publisher:
    """The team's CI, pushing to the source as ``USER_MI`` (AcrPush there): an Entra token
    for the registry audience, exchanged at the source's token endpoint."""

    book: TokenBook

    def get_token(self, *scopes: str, **options: object) -> AccessToken:
        return AccessToken(self.book.issue(USER_MI, ACR_AUDIENCE), int(time.time()) + 3600)


def push_signed_index(pair: ArmPair, book: TokenBook, tag: str) -> tuple[ImageRef, PushedImage]:
    """A two-platform index with an SBOM (on the index) and a signature (on a platform),
    pushed by CI; then ACR's ImagePushed event as its system topic delivers it: the topic
    is the source registry's resource id (reference section 1)."""
    pair.arm.assign(USER_MI, "acrPush", pair.source)
    auth = RegistryAuth.azure(Publisher(book))
    ref = ImageRef(pair.source.host, "team/app", tag)
    with Registries(credentials=lambda host: auth if host == pair.source.host else None) as ci:
        image = push_test_image(ci, ref, referrers=True)
    topic = pair.source.resource_id
    deliver_push(ref, image.digest, image.size, media_type=image.media_type, topic=topic)
    return ref, image


def referrers_of(runtime: LocalRuntime, host: str, subject: str) -> set[str]:
    client = runtime.registries.client(host)
    return set(list_referrers(runtime.registries, client, "team/app", subject).digests)


def assert_in_dr(runtime: LocalRuntime, pair: ArmPair, ref: ImageRef, image: PushedImage) -> None:
    """Digest for digest: the tag, every platform, and each subject's referrers listed."""
    dr = runtime.registries.client(pair.target.host)
    tagged = dr.head_manifest(ImageRef(pair.target.host, "team/app", ref.tag))
    assert tagged is not None and tagged.digest == image.digest
    for digest in (*image.manifests, *image.referrer_digests):
        found = dr.head_manifest(ImageRef(pair.target.host, "team/app", digest=digest))
        assert found is not None and found.digest == digest
    for subject in (image.digest, *image.manifests):
        assert referrers_of(runtime, pair.target.host, subject) == referrers_of(
            runtime, pair.source.host, subject
        )
    listed = referrers_of(runtime, pair.target.host, image.digest) | referrers_of(
        runtime, pair.target.host, image.manifests[0]
    )
    assert listed == set(image.referrer_digests) and len(listed) == image.referrers == 2


def row_of(runtime: LocalRuntime, tag: str) -> dict[str, object]:
    (row,) = runtime.status.images("team/app", tag)
    return row


def test_infra_defaults_grant_import_and_copy_roles_on_both_registries() -> None:
    """What the two tests below load into ARM: auto, the importer role on both registries
    (import by resource id reads the source), AcrPull on the source, AcrPush on the target."""
    assert (DEPLOYED.strategy, DEPLOYED.delete_policy) == ("auto", "keep")
    assert not DEPLOYED.source_abac and not DEPLOYED.target_abac
    importer = roles.role("importer")
    assert {r.key for r in DEPLOYED.source_roles()} == {"importer", "acrPull"}
    assert {r.key for r in DEPLOYED.target_roles()} == {"importer", "acrPush"}
    assert importer.allows(roles.IMPORT_ACTION) and importer.allows(roles.REGISTRY_READ)


def test_a_signed_index_lands_in_dr_by_import_with_its_referrers(
    deployment: ArmPair, worker: LocalRuntime, book: TokenBook
) -> None:
    ref, image = push_signed_index(deployment, book, "2.0")
    stats = drain(worker)
    assert (stats.succeeded, stats.poisoned) == (1, 0)

    row = row_of(worker, "2.0")
    assert (row["outcome"], row["strategy"]) == ("imported", "import")
    assert not row["lastError"]
    assert_in_dr(worker, deployment, ref, image)
    image_import, *referrer_imports = deployment.arm.import_bodies
    assert image_import["source"] == {
        "resourceId": deployment.source.resource_id,
        "sourceImage": f"team/app@{image.digest}",
    }
    assert image_import["targetTags"] == ["team/app:2.0"]
    assert sorted(b["source"]["sourceImage"] for b in referrer_imports) == sorted(
        f"team/app@{d}" for d in image.referrer_digests
    )
    assert all(b["untaggedTargetRepositories"] == ["team/app"] for b in referrer_imports)
    assert handle_status(worker, {}).body["importVerdicts"] == []


def test_with_only_acrpull_on_the_source_it_lands_by_copy_and_the_row_says_why(
    deployment: ArmPair, worker: LocalRuntime, book: TokenBook
) -> None:
    deployment.arm.roles[(FUNCTION_MI.object_id, deployment.source.resource_id.lower())] = {
        "acrPull"
    }
    ref, image = push_signed_index(deployment, book, "2.0")
    stats = drain(worker)
    assert (stats.succeeded, stats.poisoned) == (1, 0)

    row = row_of(worker, "2.0")
    assert (row["outcome"], row["strategy"]) == ("copied", "copy")
    why = str(row["lastError"])
    assert why.startswith("copied, not imported (source-read): ")
    assert "cannot read the source registry contososrc" in why
    assert "'Container Registry Data Importer and Data Reader'" in why
    assert "LinkedAuthorizationFailed" in why
    assert_in_dr(worker, deployment, ref, image)
    assert len(deployment.arm.import_bodies) == 1  # the refused import, nothing else

    (verdict,) = handle_status(worker, {}).body["importVerdicts"]
    assert (verdict["target"], verdict["reason"]) == (deployment.target.host, "source-read")

    # the next push is copied at once: no refused ARM call per job
    ref2, image2 = push_signed_index(deployment, book, "2.1")
    assert drain(worker).succeeded == 1
    assert len(deployment.arm.import_bodies) == 1
    later = row_of(worker, "2.1")
    assert later["strategy"] == "copy"
    assert "import skipped until" in str(later["lastError"])
    assert_in_dr(worker, deployment, ref2, image2)


def test_an_import_target_without_acrpush_gets_the_image_and_referrers_by_import(
    deploy: Callable[[Deployed], ArmPair], fresh_azurite: Azurite, book: TokenBook
) -> None:
    """Strategy ``import``: infra grants the target the importer role only, which cannot
    push; everything still arrives, because nothing is pushed over the data plane."""
    config = replace(DEPLOYED, strategy="import")
    pair = deploy(config)
    assert {r.key for r in config.target_roles()} == {"importer"}
    with worker_for(pair, config, fresh_azurite) as runtime:
        ref, image = push_signed_index(pair, book, "2.0")
        assert drain(runtime).succeeded == 1
        row = row_of(runtime, "2.0")
        assert (row["outcome"], row["strategy"]) == ("imported", "import")
        assert_in_dr(runtime, pair, ref, image)
        assert len(pair.arm.import_bodies) == 1 + image.referrers
        dr = runtime.registries.client(pair.target.host)
        with pytest.raises(PermanentRegistryError):  # the data plane refuses this identity a push
            dr.push_blob("team/app", b"not allowed", sha256_digest(b"not allowed"))


def closed_port() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_import_target_behind_a_private_endpoint_needs_no_data_plane_from_the_worker(
    deploy: Callable[[Deployed], ArmPair], fresh_azurite: Azurite, book: TokenBook
) -> None:
    """Strategy ``import`` where it is meant for: the target's public access is off and
    the login server the worker is given refuses it; only ACR's own import (ARM's
    backend) reaches the data plane. Image and referrers still arrive, each by import."""
    config = replace(DEPLOYED, strategy="import")
    pair = deploy(config)
    real = pair.target.host
    pair.target.private_host = real
    pair.target.host = closed_port()
    pair.target.public_network_access = "Disabled"
    pair.target.private_endpoints = 1
    with worker_for(pair, config, fresh_azurite) as runtime:
        ref, image = push_signed_index(pair, book, "2.0")
        stats = drain(runtime)
        assert (stats.succeeded, stats.poisoned) == (1, 0)
        row = row_of(runtime, "2.0")
        assert (row["outcome"], row["strategy"]) == ("imported", "import")
        assert "ARM reported the import succeeded" in str(row["lastError"])
        assert len(pair.arm.import_bodies) == 1 + image.referrers
    pair.target.host = real  # read DR where the test can reach it, as the worker's identity
    with worker_for(pair, config, fresh_azurite) as reader:
        assert_in_dr(reader, pair, ref, image)
