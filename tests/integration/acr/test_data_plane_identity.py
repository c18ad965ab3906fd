"""The data plane with the identity factory: managed identity token -> ACR's exchange on a
real token-auth registry (``doubles.token_server``), and doctor's token and push checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles import Principal, TokenBook
from doubles.identity import FUNCTION_MI, ManagedIdentityDouble
from doubles.token_server import TokenService, serve

from replicator.cli import main
from replicator.config import load_settings
from replicator.identity import registry_credentials
from replicator.localstack import LocalStack, Registry
from replicator.oci.copy import ImageCopier
from replicator.oci.reference import ImageRef
from replicator.oci.registries import Registries
from replicator.oci.testimages import push_test_image

ACR_AUDIENCE = "https://containerregistry.azure.net"


class EntraTokensFrom(set[str]):
    """What the registry's exchange accepts: Entra tokens for ACR issued to ``allowed``."""

    def __init__(self, book: TokenBook, allowed: set[Principal]) -> None:
        super().__init__()
        self.book, self.allowed = book, allowed

    def __contains__(self, token: object) -> bool:
        found = self.book.lookup(str(token))
        return found is not None and found[0] in self.allowed and found[1] == ACR_AUDIENCE


@pytest.fixture
def acr_like(
    stack: LocalStack, tmp_path: Path, book: TokenBook
) -> Iterator[tuple[Registry, TokenService]]:
    with serve(TokenService(tmp_path)) as service:
        service.entra_tokens = EntraTokensFrom(book, {FUNCTION_MI})
        running = stack.start_registry(config=service.registry_config())
        yield running, service
        running.stop()


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
    book: TokenBook,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, service = acr_like
    service.entra_tokens = EntraTokensFrom(book, set())  # nobody has a role on it
    for key, value in env_for(registry, target).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--json"]) == 1
    checks = {(c["registry"], c["check"]): c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks[(target.host, "reachable")]["status"] == "pass"
    token = checks[(target.host, "token")]
    assert token["status"] == "fail"
    assert "managed identity" in token["fix"]
