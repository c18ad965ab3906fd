"""The Azure doubles, started per test: managed identity, Entra, ARM (HTTPS via trustme)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from devstack.localstack import LocalStack
from devstack.testimages import seed
from replicator.adapters.acr import roles
from replicator.adapters.acr.importer import AcrImporter
from replicator.adapters.azure.credentials import credential_for
from replicator.adapters.oci.registries import Registries
from replicator.domain.config import Settings
from tests.doubles import TokenBook
from tests.doubles.arm import ArmDouble, ArmPair, FakeAcr
from tests.doubles.identity import (
    FED_APP,
    FUNCTION_MI,
    USER_MI,
    App,
    EntraDouble,
    ManagedIdentityDouble,
)


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A CA made for this test; the Azure SDKs' requests transport trusts it."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return authority


@pytest.fixture
def book() -> TokenBook:
    return TokenBook()


@pytest.fixture
def managed_identity(
    book: TokenBook, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ManagedIdentityDouble]:
    double = ManagedIdentityDouble(book, FUNCTION_MI, {USER_MI.client_id: USER_MI}).start()
    for key, value in double.env.items():
        monkeypatch.setenv(key, value)
    yield double
    double.stop()


@pytest.fixture
def entra(book: TokenBook, ca: trustme.CA) -> Iterator[EntraDouble]:
    double = EntraDouble(book, ca).start()
    double.add_app(App(FED_APP, trusts=FUNCTION_MI))
    yield double
    double.stop()


@pytest.fixture
def arm(book: TokenBook, ca: trustme.CA) -> Iterator[ArmDouble]:
    double = ArmDouble(book, ca).start()
    yield double
    double.stop()


IMPORTER_ROLE = "Container Registry Data Importer and Data Reader"


@pytest.fixture
def pair(
    arm: ArmDouble,
    managed_identity: ManagedIdentityDouble,
    stack: LocalStack,
    registries: Registries,
) -> Iterator[ArmPair]:
    """Premium ACRs, the function's identity holding what infra/ grants for one target on
    strategy ``auto`` (the role table's matrix: the importer role on both, AcrPull on the
    source, AcrPush on the target); ``team/app:1.0`` (seed variant 1) in the source."""
    src, dst = stack.start_registry(), stack.start_registry()
    source = arm.add(FakeAcr("contososrc", src.host))
    target = arm.add(FakeAcr("contosodr", dst.host))
    arm.grant(FUNCTION_MI, roles.source_grants(["auto"], abac=False), source)
    arm.grant(
        FUNCTION_MI, roles.target_grants(strategy="auto", delete_policy="keep", abac=False), target
    )
    seed(registries, src.host, [("team/app", "1.0", 1)])
    yield ArmPair(arm, source, target)
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
