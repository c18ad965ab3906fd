from __future__ import annotations

from collections.abc import Iterator

import pytest

from replicator.localstack import Azurite, LocalStack, Registry


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as running:
        yield running


@pytest.fixture
def registry(stack: LocalStack) -> Iterator[Registry]:
    """A fresh, empty distribution registry for one test, stopped after it."""
    running = stack.start_registry()
    yield running
    running.stop()


@pytest.fixture
def registry_pair(stack: LocalStack) -> Iterator[tuple[Registry, Registry]]:
    pair = stack.start_registry(), stack.start_registry()
    yield pair
    for running in pair:
        running.stop()


@pytest.fixture(scope="session")
def azurite(stack: LocalStack) -> Azurite:
    """One Azurite for the session; tests that need empty queues use fresh_azurite."""
    return stack.start_azurite()


@pytest.fixture
def fresh_azurite(stack: LocalStack) -> Iterator[Azurite]:
    running = stack.start_azurite()
    yield running
    running.stop()
