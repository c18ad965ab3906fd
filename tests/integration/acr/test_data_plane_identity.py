"""The data plane with the identity factory: managed identity token -> ACR's exchange on a
real token-auth registry (``doubles.token_server``), and doctor's token and push checks.

The token service grants scopes only as the role table allows (``AcrExchange``): the
roles assigned here are what infra/ grants (``roles.target_grants``/``source_grants``),
so "an import target without AcrPush" and "a copy source with AcrPull only" are shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from devstack.localstack import LocalStack, Registry
from devstack.testimages import push_test_image
from replicator.adapters.acr import roles
from replicator.adapters.azure.credentials import registry_credentials
from replicator.adapters.oci.copy import ImageCopier
from replicator.adapters.oci.registries import Registries
from replicator.cli import main
from replicator.domain.config import load_settings
from replicator.domain.errors import PermanentRegistryError
from replicator.domain.reference import ImageRef
from tests.doubles import RoleAssignments, TokenBook
from tests.doubles.identity import FUNCTION_MI, ManagedIdentityDouble
from tests.doubles.token_server import ACR_AUDIENCE, AcrExchange, TokenService, serve

REGISTRY_ID = (
    "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-dr"
    "/providers/Microsoft.ContainerRegistry/registries/contosodr"
)


@pytest.fixture
def assignments() -> RoleAssignments:
    return RoleAssignments()


@pytest.fixture
def acr_like(
    stack: LocalStack, tmp_path: Path, book: TokenBook, assignments: RoleAssignments
) -> Iterator[tuple[Registry, TokenService]]:
    """A registry behind ACR's token endpoints; the function's identity holds what infra/
    grants a ``copy`` target (AcrPush) unless a test changes it."""
    service = TokenService(tmp_path, acr=AcrExchange(book, assignments, REGISTRY_ID))
    hold(assignments, roles.target_grants(strategy="copy", delete_policy="keep", abac=False))
    with serve(service):
        running = stack.start_registry(config=service.registry_config())
        yield running, service
        running.stop()


def granted_actions(service: TokenService) -> list[list[str]]:
    """The ``actions`` of each scope of the last access token the service issued."""
    claims = jwt.decode(service.issued[-1], options={"verify_signature": False})
    return [entry["actions"] for entry in claims["access"]]


def hold(assignments: RoleAssignments, granted: tuple[roles.Role, ...]) -> None:
    """The function's identity holds exactly ``granted`` on the registry."""
    assignments.held.clear()
    for role in granted:
        assignments.assign(FUNCTION_MI, role.key, REGISTRY_ID)


def env_for(source: Registry, target: Registry) -> dict[str, str]:
    return {
        "REPLICATOR_SOURCE": source.host,
        "REPLICATOR_TARGETS": json.dumps([{"login_server": target.host, "strategy": "copy"}]),
        "REPLICATOR_IDENTITIES": json.dumps({target.host: "managed"}),
    }


def test_copy_into_a_registry_that_takes_the_managed_identity_through_the_exchange(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
) -> None:
    target, service = acr_like
    settings = load_settings(env_for(registry, target))
    with Registries(credentials=registry_credentials(settings)) as registries:
        src = ImageRef(registry.host, "team/app", "1.0")
        pushed = push_test_image(registries, src)
        report = ImageCopier(registries).copy_image(src, src.with_registry(target.host))
    assert report.digest == pushed.digest
    assert service.requests.count("POST /oauth2/exchange") == 1
    assert {"api-version": "2019-08-01", "resource": ACR_AUDIENCE} in managed_identity.requests


def test_doctor_checks_the_exchange_and_push_for_real(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, service = acr_like
    for key, value in env_for(registry, target).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--json"]) == 0
    checks = {(c["registry"], c["check"]): c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks[(target.host, "token")]["status"] == "pass"
    assert checks[(target.host, "push")]["status"] == "pass"
    assert checks[(target.host, "strategy")]["detail"] == "copy: strategy copy is configured"
    assert "POST /oauth2/exchange" in service.requests


def test_doctor_reports_a_refused_exchange_as_a_token_failure(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    assignments: RoleAssignments,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, _ = acr_like
    assignments.held.clear()  # nobody has a role on it
    for key, value in env_for(registry, target).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--json"]) == 1
    checks = {(c["registry"], c["check"]): c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks[(target.host, "reachable")]["status"] == "pass"
    token = checks[(target.host, "token")]
    assert token["status"] == "fail"
    assert "managed identity" in token["fix"]


def copy_into(source: Registry, target: Registry, tag: str = "1.0") -> str:
    """Push a test image to ``source`` and copy it into ``target`` as the worker does."""
    settings = load_settings(env_for(source, target))
    with Registries(credentials=registry_credentials(settings)) as registries:
        src = ImageRef(source.host, "team/app", tag)
        pushed = push_test_image(registries, src)
        ImageCopier(registries).copy_image(src, src.with_registry(target.host))
    return pushed.digest


def test_an_import_target_without_acr_push_gets_no_push_scope(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    assignments: RoleAssignments,
) -> None:
    """What infra/ grants a target on strategy ``import``: the importer role, no AcrPush.
    A push over the data plane (a referrer after an import, say) is refused there."""
    target, service = acr_like
    hold(assignments, roles.target_grants(strategy="import", delete_policy="keep", abac=False))
    with pytest.raises(PermanentRegistryError):
        copy_into(registry, target)
    assert service.issued, "the exchange answered: the importer role is a role on the registry"
    assert all("push" not in actions for actions in granted_actions(service))


def test_a_copy_source_with_acr_pull_only_gets_pull_but_no_push(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    assignments: RoleAssignments,
) -> None:
    """AcrPull alone (what infra/ grants a source whose targets all copy): a copy out of it
    works, a push into it is refused."""
    acr, service = acr_like
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": acr.host,
            "REPLICATOR_TARGETS": json.dumps([{"login_server": registry.host}]),
            "REPLICATOR_IDENTITIES": json.dumps({acr.host: "managed"}),
        }
    )
    src = ImageRef(acr.host, "team/app", "1.0")
    with Registries(credentials=registry_credentials(settings)) as registries:
        pushed = push_test_image(registries, src)  # while the identity holds AcrPush
    hold(assignments, roles.source_grants(["copy"], abac=False))
    assert [r.name for r in roles.source_grants(["copy"], abac=False)] == ["AcrPull"]
    with Registries(credentials=registry_credentials(settings)) as registries:
        report = ImageCopier(registries).copy_image(src, src.with_registry(registry.host))
        assert granted_actions(service) == [["pull"]]
        with pytest.raises(PermanentRegistryError):
            push_test_image(registries, ImageRef(acr.host, "team/app", "2.0"))
    assert report.digest == pushed.digest
    assert all("push" not in actions for actions in granted_actions(service))


def test_abac_registries_ignore_acr_push_and_honour_repository_writer(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    assignments: RoleAssignments,
) -> None:
    target, service = acr_like
    assert service.acr is not None
    service.acr.abac = True
    hold(assignments, roles.target_grants(strategy="copy", delete_policy="keep", abac=False))
    with pytest.raises(PermanentRegistryError):
        copy_into(registry, target, "1.0")
    hold(assignments, roles.target_grants(strategy="copy", delete_policy="keep", abac=True))
    digest = copy_into(registry, target, "2.0")
    assert digest.startswith("sha256:")
    assert ["pull", "push"] in granted_actions(service)


def test_on_abac_registries_listing_the_catalog_needs_catalog_lister(
    registry: Registry,
    acr_like: tuple[Registry, TokenService],
    managed_identity: ManagedIdentityDouble,
    assignments: RoleAssignments,
) -> None:
    """Repository Reader reads repositories but not the catalog; Catalog Lister lists it
    (what reconcile needs, so infra/ grants it on ABAC registries)."""
    from replicator.adapters.oci.listing import RegistryLister

    acr, service = acr_like
    copy_into(registry, acr)  # pushed with AcrPush on a registry in RBAC mode
    assert service.acr is not None
    service.acr.abac = True
    settings = load_settings(
        {
            "REPLICATOR_SOURCE": acr.host,
            "REPLICATOR_TARGETS": json.dumps([{"login_server": registry.host}]),
            "REPLICATOR_IDENTITIES": json.dumps({acr.host: "managed"}),
        }
    )
    hold(assignments, (roles.role("repositoryReader"),))
    with Registries(credentials=registry_credentials(settings)) as registries:
        lister = RegistryLister(registries.client(acr.host), acr.host, acr=False)
        refused = lister.listing()
    assert refused.failed == {""}  # the catalog
    assert all(actions == [] for actions in granted_actions(service))
    hold(assignments, roles.source_grants(["copy"], abac=True))
    with Registries(credentials=registry_credentials(settings)) as registries:
        lister = RegistryLister(registries.client(acr.host), acr.host, acr=False)
        listed = lister.listing()
    assert listed.errors == ()
    assert ("team/app", "1.0") in [(e.repository, e.tag) for e in listed.entries]
