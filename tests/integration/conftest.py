"""Fixtures shared by the tests on real registries (and Azurite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from replicator.adapters.oci.registries import Registries


@pytest.fixture
def registries() -> Iterator[Registries]:
    """Anonymous registry clients (plain HTTP on loopback), closed after the test: what a
    test seeds and reads the registries it started with."""
    with Registries() as running:
        yield running
