from __future__ import annotations

from collections.abc import Iterator

import pytest

from replicator.localstack import Azurite, LocalStack, Registry


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as running:
        yield running


@pytest.fixture
def registry(stack: LocalStack) -> Registry:
    """A fresh, empty distribution registry for one test."""
    return stack.start_registry()


@pytest.fixture
def registry_pair(stack: LocalStack) -> tuple[Registry, Registry]:
    return stack.start_registry(), stack.start_registry()


@pytest.fixture(scope="session")
def azurite(stack: LocalStack) -> Azurite:
    return stack.start_azurite()
