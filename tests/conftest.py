from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.localstack import Azurite, LocalStack, Registry
from devstack.referrers_api import ReferrersRegistry, referrers_registry


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


@pytest.fixture
def api_registry(stack: LocalStack) -> Iterator[ReferrersRegistry]:
    """A fresh registry with the OCI 1.1 referrers API (``devstack.referrers_api``), its
    referrers two to a page, so a longer list comes in pages linked by ``Link``."""
    with referrers_registry(stack, page_size=2) as running:
        yield running


@pytest.fixture(scope="session")
def azurite(stack: LocalStack) -> Azurite:
    """One Azurite for the session; tests that need empty queues use fresh_azurite."""
    return stack.start_azurite()


@pytest.fixture
def fresh_azurite(stack: LocalStack) -> Iterator[Azurite]:
    running = stack.start_azurite()
    yield running
    running.stop()


# Valid settings before function_app is imported: it validates them at start-up, as the host does.
FUNCTION_ENV = {
    "REPLICATOR_SOURCE": "127.0.0.1:5001",
    "REPLICATOR_TARGETS": "127.0.0.1:5002",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


@pytest.fixture(scope="session")
def indexed_functions() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """What the Functions worker indexes from function_app.py: name -> binding JSON.
    Read once per session: a FunctionApp refuses a second get_functions()."""
    saved = {k: os.environ.get(k) for k in FUNCTION_ENV}
    os.environ.update(FUNCTION_ENV)
    try:
        app = importlib.import_module("function_app").app
        yield {
            fn.get_function_name(): json.loads(fn.get_function_json())["bindings"]
            for fn in app.get_functions()
        }
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
