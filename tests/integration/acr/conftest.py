"""The Azure doubles, started per test: managed identity, Entra, ARM (HTTPS via trustme)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from doubles import TokenBook
from doubles.arm import ArmDouble
from doubles.identity import FED_APP, FUNCTION_MI, USER_MI, App, EntraDouble, ManagedIdentityDouble


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
