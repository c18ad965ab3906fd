"""Fixtures shared by the tests on real registries (and Azurite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.localstack import Azurite, Registry
from devstack.localworker import LocalPair
from replicator.adapters.oci.registries import Registries


@pytest.fixture
def registries() -> Iterator[Registries]:
    """Anonymous registry clients (plain HTTP on loopback), closed after the test: what a
    test seeds and reads the registries it started with."""
    with Registries() as running:
        yield running


@pytest.fixture
def local(
    registry_pair: tuple[Registry, Registry], fresh_azurite: Azurite, registries: Registries
) -> LocalPair:
    source, target = registry_pair
    return LocalPair(source, target, fresh_azurite, registries)
